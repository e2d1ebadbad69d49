"""The in-process vLLM engine on the real SmolLM2-135M-Instruct: sampling, log-probs, weight sync.

One engine per module (start-up is the expensive part). Every log-prob the engine reports is
checked against the Hugging Face forward pass of the same weights, and the end-to-end test runs
a real KeyRooms rollout through `LLMAgent`, a LoRA update by the learner and a weight sync, then
checks that the engine samples from the updated policy. Run under the big-memory lock::

    flock /tmp/cg-bigmem.lock .venv/bin/pytest tests/agents/test_vllm.py
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from creditgym.agents.backends import make_backend
from creditgym.agents.backends.base import SamplingConfig
from creditgym.agents.backends.vllm import VLLMBackend
from creditgym.agents.models import resolve_model

pytestmark = [
    pytest.mark.slow,
    # vLLM's import touches a deprecated torch.distributed alias; nothing of ours.
    pytest.mark.filterwarnings("ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

MAX_MODEL_LEN = 1024


@pytest.fixture(scope="module")
def model_path() -> str:
    return resolve_model("smollm2-135m")


@pytest.fixture(scope="module")
def engine(model_path: str):
    backend = make_backend("vllm", model_path, max_model_len=MAX_MODEL_LEN, kv_cache_gb=0.5)
    assert isinstance(backend, VLLMBackend)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def tokenizer(model_path: str):
    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="module")
def hf_model(model_path: str):
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()


def chat(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    out = []
    for text in texts:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        out.append(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return out


def hf_logprobs(model: Any, prompt: Sequence[int], response: Sequence[int]) -> torch.Tensor:
    """Log-probs of ``response`` after ``prompt`` under ``model`` (teacher forcing)."""
    ids = torch.tensor([list(prompt) + list(response)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None])[:, 0]


PROMPTS = ["Name a colour.", "What is 2 + 3?", "Say hello.", "Say hello."]


def test_samples_carry_token_ids_and_the_policy_logprobs(engine, tokenizer, hf_model):
    prompts = chat(tokenizer, PROMPTS)
    gens = engine.generate(prompts, SamplingConfig(max_new_tokens=24, seed=0))
    assert len(gens) == len(prompts)
    for prompt, g in zip(prompts, gens):
        assert 1 <= len(g.token_ids) <= 24 and len(g.logprobs) == len(g.token_ids)
        assert g.finish_reason == ("length" if len(g.token_ids) == 24 else "stop")
        if g.finish_reason == "stop":
            assert g.token_ids[-1] == tokenizer.eos_token_id  # the sampled EOS is kept
        assert g.text == tokenizer.decode(g.token_ids, skip_special_tokens=True)
        # At temperature 1 the sampler's log-probs are the policy's: the learner sees the same.
        ref = hf_logprobs(hf_model, prompt, g.token_ids)
        assert torch.allclose(torch.tensor(g.logprobs), ref, atol=2e-3), (g.logprobs, ref)
    assert engine.last_stats["tokens"] == sum(len(g.token_ids) for g in gens)


def test_seeds_reproduce_runs_and_separate_a_group(engine, tokenizer):
    prompts = chat(tokenizer, ["Tell me a story about a key."] * 4)
    sampling = SamplingConfig(max_new_tokens=16, seed=123)
    first = [g.token_ids for g in engine.generate(prompts, sampling)]
    engine._calls -= 1  # replay the same call number, so the same per-prompt seeds
    again = [g.token_ids for g in engine.generate(prompts, sampling)]
    assert first == again
    assert len({tuple(t) for t in first}) > 1  # identical prompts, different samples


def test_greedy_follows_the_argmax(engine, tokenizer, hf_model):
    prompts = chat(tokenizer, ["List three fruits."])
    g = engine.generate(prompts, SamplingConfig(temperature=0.0, max_new_tokens=12))[0]
    ids = torch.tensor([prompts[0] + g.token_ids])
    with torch.no_grad():
        logits = hf_model(ids).logits[0, len(prompts[0]) - 1 : -1]
    chosen = logits.gather(1, torch.tensor(g.token_ids)[:, None])[:, 0]
    assert torch.all(logits.max(-1).values - chosen < 1e-3)


def test_stop_strings_end_the_turn_and_are_kept(engine, tokenizer):
    prompts = chat(tokenizer, ["Write a sentence about the sea.", "Describe a tree."])
    gens = engine.generate(prompts, SamplingConfig(max_new_tokens=32, stop=("e",), seed=1))
    for g in gens:
        if g.finish_reason == "stop" and g.token_ids[-1] != tokenizer.eos_token_id:
            assert g.text.endswith("e") and g.text.count("e") == 1
        else:
            assert "e" not in g.text


def test_context_limits(engine):
    with pytest.raises(ValueError, match="no room"):
        engine.generate([[1] * MAX_MODEL_LEN], SamplingConfig(max_new_tokens=4))
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([[1, 2], []], SamplingConfig())
    near = engine.generate([[1] * (MAX_MODEL_LEN - 3)], SamplingConfig(max_new_tokens=50))[0]
    assert len(near.token_ids) <= 3
    assert engine.generate([], SamplingConfig()) == []


def test_rollout_update_and_sync_move_the_engine_to_the_new_policy(engine, model_path):
    """KeyRooms rollout through the engine -> learner (LoRA) update -> sync -> new policy."""
    from creditgym.agents.llm import LLMAgent
    from creditgym.credit.base import Advantages
    from creditgym.credit.trajectory import flat_steps
    from creditgym.trainers.learner import Learner, LearnerConfig
    from creditgym.trainers.rollout import EnvPool, collect

    learner = Learner(LearnerConfig(lr=2e-3, kl_coef=0.0, mini_batches=2), model_path)
    agent = LLMAgent(engine, learner.tokenizer, sampling=SamplingConfig(max_new_tokens=8, seed=0))
    env_kwargs = {"level": "small", "max_steps": 2}
    with EnvPool("creditgym/KeyRooms-v0", 4, env_kwargs=env_kwargs) as pool:
        groups = collect(pool, agent, [0, 1], 2, [0, 1]).groups
    steps = flat_steps(groups)
    assert steps and all(len(s.response_ids) == len(s.sampler_logprobs) for s in steps)

    # The learner's recomputed log-probs agree with what the engine reported.
    metrics = learner.prepare(groups, {"old_logprobs"})
    assert metrics["train/logprob_mismatch_max"] < 2e-3

    probe = [list(steps[0].prompt_ids)]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=16)
    before = engine.generate(probe, greedy)[0]

    signs = np.where(np.arange(len(steps)) % 2 == 0, 1.0, -1.0)
    learner.update(groups, Advantages(values=signs))
    seconds = engine.sync_weights(learner)  # what the trainer passes
    assert seconds > 0 and set(engine.last_sync) == {"export", "reload", "total"}

    after = engine.generate(probe, SamplingConfig(temperature=1.0, max_new_tokens=16, seed=5))[0]
    learner.model.eval()
    new_lp = hf_logprobs(learner.model, probe[0], after.token_ids)
    assert torch.allclose(torch.tensor(after.logprobs), new_lp, atol=2e-3)
    moved = engine.generate(probe, greedy)[0]
    old_lp = hf_logprobs(learner.model, probe[0], before.token_ids)
    reported = torch.tensor(before.logprobs)
    assert moved.token_ids != before.token_ids or (old_lp - reported).abs().max() > 1e-2

    # Reloading the original folder restores the original policy exactly.
    engine.sync_weights(model_path)
    assert engine.generate(probe, greedy)[0].token_ids == before.token_ids


def test_a_json_schema_constrains_the_reflection_report(engine, tokenizer, hf_model):
    """R^3L's ``reflection_schema`` under vLLM's structured outputs: every report that was not cut
    off passes the parser. The log-probs are those of the constrained distribution: never below
    the policy's, and above it where the schema removed mass."""
    from creditgym.trainers.strategies_branching import (
        REFLECTION_INSTRUCTIONS,
        check_reflection,
        reflection_schema,
    )

    user = "Task: open the door\n" + "\n".join(
        f"Step {t}: observation: a hall | action: go north" for t in range(3)
    )
    rendered = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": REFLECTION_INSTRUCTIONS},
            {"role": "user", "content": user + "\nOutcome: not won, return 0"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    prompt = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    sampling = SamplingConfig(
        temperature=1.0, max_new_tokens=320, seed=0, json_schema=reflection_schema(3, 96)
    )
    gens = engine.generate([prompt] * 4, sampling)
    finished = [g for g in gens if g.finish_reason == "stop"]
    assert finished, [g.text for g in gens]
    for g in finished:
        report, error = check_reflection(g.text, 3)
        assert error is None, (error, g.text)
        assert g.text.startswith('{"trajectory_summary":"')  # compact: no free whitespace
    gaps = [torch.tensor(g.logprobs) - hf_logprobs(hf_model, prompt, g.token_ids) for g in gens]
    assert min(float(x.min()) for x in gaps) > -1e-3  # renormalised over allowed tokens
    assert max(float(x.max()) for x in gaps) > 1.0  # a forced key token: log-prob 0 here
