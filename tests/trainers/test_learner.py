"""The learner on the tiny model: token-exact samples, prepare, PPO update, reference, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from creditgym.agents.backends import SamplingConfig
from creditgym.agents.backends.hf import HFBackend
from creditgym.agents.llm import LLMAgent
from creditgym.agents.models import tiny_model
from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup, flat_steps
from creditgym.trainers.learner import Learner, LearnerConfig
from creditgym.trainers.rollout import EnvPool, collect


def _rollout(learner: Learner, context: str = "steps", tasks: int = 2, group: int = 2):
    backend = HFBackend(model=learner.model, tokenizer=learner.tokenizer)
    agent = LLMAgent(
        backend,
        learner.tokenizer,
        context=context,
        sampling=SamplingConfig(max_new_tokens=6, seed=0),
    )
    with EnvPool(
        "creditgym/KeyRooms-v0", tasks * group, env_kwargs={"level": "small", "max_steps": 3}
    ) as pool:
        return collect(pool, agent, list(range(tasks)), group, list(range(tasks))).groups


def _step(prompt: list[int], response: list[int], **kw) -> Step:
    return Step(
        state_key="s", action="a", reward=0.0, prompt_ids=prompt, response_ids=response, **kw
    )


def _group(*trajs: list[Step]) -> list[TrajectoryGroup]:
    return [TrajectoryGroup(trajectories=[Trajectory(steps=list(t)) for t in trajs])]


@pytest.fixture(scope="module")
def rolled() -> tuple[Learner, list[TrajectoryGroup]]:
    learner = Learner(LearnerConfig(), tiny_model())
    return learner, _rollout(learner)


def test_trained_tokens_are_the_sampled_tokens(rolled) -> None:
    learner, groups = rolled
    samples = learner.build_samples(groups)
    steps = flat_steps(groups)
    assert len(samples) == len(steps) > 0
    for sample, step in zip(samples, steps):
        assert sample.ids == list(step.prompt_ids) + list(step.response_ids)
        assert [sample.ids[p] for p in sample.positions] == list(step.response_ids)
    metrics = learner.prepare(groups, {"entropies"})
    # Same tokens, same weights: the learner's recomputed log-probs match the sampler's.
    assert metrics["train/logprob_mismatch_abs"] < 1e-4
    for step in steps:
        assert step.entropies is not None and len(step.entropies) == len(step.response_ids)
        assert np.all(step.entropies > 0) and np.all(
            step.entropies <= np.log(len(learner.tokenizer)) + 1e-3
        )


def test_concat_mode_masks_env_tokens_and_routes_each_turns_advantage(rolled) -> None:
    learner, _ = rolled
    p0, r0, env1, r1, env2, r2 = [1, 2, 3], [10, 11], [4, 5], [12, 13, 14], [6], [15]
    steps = [
        _step(p0, r0),
        _step(p0 + r0 + env1, r1),
        _step(p0 + r0 + env1 + r1 + env2, r2),
    ]
    other = [_step([7, 8], [20]), _step([9, 9], [21])]  # prompts that do not extend: 2 samples
    groups = _group(steps, other)
    learner.config.context = "concat"
    try:
        samples = learner.build_samples(groups)
    finally:
        learner.config.context = "steps"
    assert len(samples) == 3
    whole = samples[0]
    assert whole.ids == p0 + r0 + env1 + r1 + env2 + r2
    assert [whole.ids[p] for p in whole.positions] == r0 + r1 + r2  # env and prompt tokens masked
    adv = Advantages(values=np.array([1.0, -2.0, 3.0, 0.5, -0.5]))
    assert learner._token_advantages(whole, adv).tolist() == [1.0, 1.0, -2.0, -2.0, -2.0, 3.0]
    assert [learner._token_advantages(s, adv).tolist() for s in samples[1:]] == [[0.5], [-0.5]]
    assert len(learner.build_samples(groups)) == 5  # steps mode: one sample per step


def test_span_routed_advantages(rolled) -> None:
    learner, _ = rolled
    step = _step([1, 2], [30, 31, 32, 33, 34, 35], spans={"switch": [(0, 1)], "action": [(3, 6)]})
    groups = _group([_step([1], [9]), step])
    adv = Advantages(
        values=np.array([0.0, 1.0]),
        spans={"switch": np.array([0.0, -1.0]), "action": np.array([0.0, 2.0])},
    )
    sample = learner.build_samples(groups)[1]
    # switch token -> -1, untagged tokens keep the step's value 1, action tokens -> 2
    assert learner._token_advantages(sample, adv).tolist() == [-1.0, 1.0, 1.0, 2.0, 2.0, 2.0]


def test_update_moves_log_probs_in_the_advantage_direction() -> None:
    learner = Learner(LearnerConfig(lr=2e-3, kl_coef=0.0, mini_batches=2, epochs=2), tiny_model())
    steps = [
        _step([1, 2, 3], [40, 41]),
        _step([1, 2, 3], [50, 51]),
        _step([4, 5], [60]),
        _step([4, 6], [61]),
    ]
    groups = _group(steps)
    adv = Advantages(values=np.array([1.0, -1.0, 1.0, -1.0]))
    learner.prepare(groups)
    before = [s.old_logp.clone() for s in learner._prepared[1]]
    metrics = learner.update(groups, adv)
    assert metrics["train/optimizer_steps"] == 4.0  # 2 epochs x 2 mini-batches
    assert metrics["train/tokens"] == 2 * 6
    learner.prepare(groups)
    after = [s.old_logp for s in learner._prepared[1]]
    for a, b, sign in zip(before, after, adv.values):
        assert float(torch.sign((b - a).mean())) == sign
    assert metrics["train/clip_frac"] >= 0.0 and metrics["train/grad_norm"] > 0


def test_micro_batching_accumulates_to_the_same_gradient() -> None:
    """Token-mean over a mini-batch: any micro-batch split gives the same gradient."""
    learner = Learner(LearnerConfig(), tiny_model())
    steps = [_step(list(range(1, 2 + i)), [40 + i, 41 + i, 42][: 1 + i % 3]) for i in range(6)]
    groups = _group(steps)
    adv = Advantages(values=np.linspace(-1.0, 1.0, 6))
    learner.prepare(groups)
    samples = learner._prepared[1]
    adv_of = {id(s): learner._token_advantages(s, adv) for s in samples}
    grads = []
    for budget in (2, 4096):  # one sample per micro-batch vs all in one
        learner.config.micro_batch_tokens = budget
        learner.optimizer.zero_grad(set_to_none=True)
        sums = dict.fromkeys(["pg", "kl", "entropy", "approx_kl", "value"], 0.0)
        learner._backward_minibatch(samples, adv_of, {}, sums)
        trainable = [p for p in learner.model.parameters() if p.requires_grad]
        grads.append(torch.cat([p.grad.flatten() for p in trainable]))
        assert len(learner._micro_batches(samples)) == (6 if budget == 2 else 1)
    assert grads[0].abs().max() > 0
    # float32 noise only (a per-micro-batch mean would be off by the gradient's own size)
    assert (grads[0] - grads[1]).abs().max() <= 1e-5 * grads[0].abs().max()


def test_lora_reference_is_the_adapter_disabled_model() -> None:
    from transformers import AutoModelForCausalLM

    learner = Learner(LearnerConfig(lr=5e-3), tiny_model())
    groups = _group([_step([1, 2, 3], [40, 41, 42]), _step([1, 2, 5], [43, 44])])
    learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    learner.prepare(groups)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model()).eval()
    for sample in learner._prepared[1]:
        ids = torch.tensor([sample.ids])
        with torch.no_grad():
            logits = plain(ids).logits[0]
        pos = torch.tensor(sample.positions)
        expected = torch.log_softmax(logits[pos - 1], -1).gather(1, ids[0, pos][:, None]).squeeze(1)
        assert torch.allclose(sample.ref_logp, expected, atol=1e-5)  # reference = base weights
        assert not torch.allclose(sample.old_logp, expected, atol=1e-4)  # the policy has moved


def test_full_finetune_keeps_a_frozen_reference() -> None:
    learner = Learner(LearnerConfig(finetune="full", lr=1e-3), tiny_model())
    steps = [_step([1, 2, 3], [40, 41]), _step([1, 2, 4], [42])]
    groups = _group(steps)
    ref_before = [p.clone() for p in learner.reference.parameters()]
    learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    assert all(torch.equal(a, b) for a, b in zip(ref_before, learner.reference.parameters()))
    moved = any(
        not torch.equal(a, b)
        for a, b in zip(learner.reference.parameters(), learner.model.parameters())
    )
    assert moved


def test_prepare_fills_values_and_answer_logprobs(rolled) -> None:
    from creditgym.trainers.heads import gather_hidden

    learner, _ = rolled
    tok = learner.tokenizer

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    steps = [
        _step(
            enc("Question: capital of France?"),
            enc("<search>France</search>"),
            info={"ground_truth": "Paris"},
        ),
        _step(
            enc("Question: capital of France? Doc: Paris is."),
            enc("<switch>KEEP</switch><subgoal>answer</subgoal><action>Paris</action>"),
            spans={"subgoal": [(5, 9)]},
        ),
    ]
    groups = _group(steps)
    metrics = learner.prepare(groups, {"values", "answer_logprobs", "entropies"})
    assert metrics["train/igpo/scored_turns"] == 2
    # The values read in the policy pass equal the heads applied where trainers.heads reads.
    heads = learner.value_heads
    with torch.no_grad():
        expected = heads(gather_hidden(learner.base_model, steps, heads.names))
    for k, s in enumerate(steps):
        assert set(s.values) == {"v", "high", "low", "term"}
        for name in s.values:
            assert s.values[name] == pytest.approx(float(expected[name][k]), abs=1e-5)
        assert s.answer_logprob_before is not None and s.answer_logprob_before < 0
        assert s.answer_logprob_after is not None
    assert steps[1].values["low"] != pytest.approx(steps[1].values["term"])  # read at </subgoal>
    # after turn 0 == before turn 1 (the same context is scored)
    assert steps[0].answer_logprob_after == pytest.approx(steps[1].answer_logprob_before, abs=1e-5)
    with pytest.raises(ValueError, match="unknown needs"):
        learner.prepare(groups, {"q_values"})


def test_value_heads_train_on_critic_targets() -> None:
    from creditgym.credit.ppo import CriticAdvantages

    learner = Learner(LearnerConfig(lr=1e-3, kl_coef=0.0), tiny_model())
    groups = _group([_step([1, 2, 3], [40, 41]), _step([1, 2, 4], [42]), _step([5, 6], [43])])
    target = np.array([2.0, np.nan, -1.0])  # NaN: no target for that step
    adv = CriticAdvantages(values=np.zeros(3), targets={"v": target})
    errors = []
    for _ in range(5):
        learner.prepare(groups, {"values"})
        v = np.array([s.values["v"] for s in flat_steps(groups)])
        errors.append(float(np.nansum((v - target) ** 2)))
        metrics = learner.update(groups, adv)
        assert metrics["train/value_loss"] >= 0
    assert errors[-1] < 0.2 * errors[0]  # by hand: 3.77 -> 0.08 after 3 updates
    with pytest.raises(ValueError, match="add them to learner.value_heads"):
        learner.update(groups, CriticAdvantages(values=np.zeros(3), targets={"q": target}))


def test_state_dict_round_trip_and_merged_export(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = LearnerConfig(lr=5e-3)
    learner = Learner(cfg, tiny_model())
    groups = _group([_step([1, 2, 3], [40, 41, 42]), _step([1, 2, 5], [43])])
    learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    state = learner.state_dict()
    clone = Learner(cfg, tiny_model())
    clone.load_state_dict(state)
    ids = torch.tensor([[1, 2, 3, 40, 41, 42]])
    with torch.no_grad():
        ref_logits = learner.model(ids).logits
        assert torch.equal(clone.model(ids).logits, ref_logits)
    assert clone.updates == 1
    assert (
        clone.optimizer.state_dict()["state"].keys()
        == learner.optimizer.state_dict()["state"].keys()
    )
    # both continue identically
    learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    clone.update(groups, Advantages(values=np.array([1.0, -1.0])))
    with torch.no_grad():
        assert torch.allclose(clone.model(ids).logits, learner.model(ids).logits, atol=1e-6)
        ref_logits = learner.model(ids).logits

    out = Path(learner.save_merged(tmp_path / "merged"))
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k or k.startswith("base_model") for k in keys)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, ref_logits, atol=1e-4)
    assert "lora_A" in next(
        n for n, _ in learner.model.named_parameters() if "lora" in n
    )  # not merged in place

    with pytest.raises(ValueError, match="'full' model"):
        Learner(LearnerConfig(finetune="full", kl_coef=0.0), tiny_model()).load_state_dict(
            state | {"finetune": "lora"}
        ) if False else learner.load_state_dict(state | {"finetune": "full"})


def test_bad_config_and_bad_input_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="finetune must be one of"):
        Learner(LearnerConfig(finetune="qlora"), tiny_model())
    learner = Learner(LearnerConfig(), tiny_model())
    tabular = _group([Step(state_key="s", action="a", reward=0.0)])
    with pytest.raises(ValueError, match="no token ids"):
        learner.prepare(tabular)
    groups = _group([_step([1, 2], [3])])
    with pytest.raises(ValueError, match="1 steps"):
        learner.update(groups, Advantages(values=np.zeros(2)))
