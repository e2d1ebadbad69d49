"""The `hf` backend on the tiny model: sampled log-probs are the policy's, padding is harmless."""

from __future__ import annotations

import pytest
import torch

from creditgym.agents.backends import SamplingConfig, make_backend
from creditgym.agents.backends.hf import HFBackend
from creditgym.agents.models import tiny_model


@pytest.fixture(scope="module")
def backend() -> HFBackend:
    return make_backend("hf", tiny_model(), batch_size=8)


def _prompts(backend: HFBackend) -> list[list[int]]:
    tok = backend.tokenizer
    texts = ["Hello there.", "You are in the hall. You see a red key and a door to the attic."]
    out = []
    for t in texts:
        rendered = tok.apply_chat_template(
            [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
        )
        out.append(tok(rendered, add_special_tokens=False)["input_ids"])
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_are_the_policy_logprobs(backend: HFBackend, temperature: float) -> None:
    prompts = _prompts(backend)
    gens = backend.generate(
        prompts, SamplingConfig(temperature=temperature, max_new_tokens=6, seed=3)
    )
    for prompt, gen in zip(prompts, gens):
        assert len(gen.token_ids) == len(gen.logprobs) == 6 and gen.finish_reason == "length"
        ids = torch.tensor([prompt + gen.token_ids])
        with torch.no_grad():
            logits = backend.model(ids).logits[0, len(prompt) - 1 : -1] / temperature
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(gen.token_ids)[:, None])
        assert gen.logprobs == pytest.approx(expected.squeeze(1).tolist(), abs=1e-4)
        assert gen.text == backend.tokenizer.decode(gen.token_ids, skip_special_tokens=True)


def test_left_padding_does_not_change_greedy_output(backend: HFBackend) -> None:
    prompts = _prompts(backend)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=8)
    batched = backend.generate(prompts, greedy)
    for prompt, gen in zip(prompts, batched):
        alone = backend.generate([prompt], greedy)[0]
        assert alone.token_ids == gen.token_ids
        assert alone.logprobs == pytest.approx(gen.logprobs, abs=1e-4)


def test_seeded_sampling_is_reproducible_and_leaves_global_rng(backend: HFBackend) -> None:
    prompts = _prompts(backend)
    a = HFBackend(model=backend.model, tokenizer=backend.tokenizer)
    b = HFBackend(model=backend.model, tokenizer=backend.tokenizer)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    sa = a.generate(prompts, SamplingConfig(max_new_tokens=8, seed=11))
    assert torch.equal(torch.get_rng_state(), state)
    sb = b.generate(prompts, SamplingConfig(max_new_tokens=8, seed=11))
    assert [g.token_ids for g in sa] == [g.token_ids for g in sb]
    # a second call moves on to a new seed, so repeated turns are not copies
    sa2 = a.generate(prompts, SamplingConfig(max_new_tokens=8, seed=11))
    assert [g.token_ids for g in sa2] != [g.token_ids for g in sa]


def test_stop_string_ends_generation_at_its_token(backend: HFBackend) -> None:
    prompt = _prompts(backend)[1]
    fresh = HFBackend(model=backend.model, tokenizer=backend.tokenizer)
    free = fresh.generate([prompt], SamplingConfig(max_new_tokens=12, seed=5))[0]
    decode = backend.tokenizer.decode
    # The first token (after the first) whose text adds a string not seen before serves as stop.
    for k in range(2, 12):
        prev = decode(free.token_ids[: k - 1], skip_special_tokens=True)
        added = decode(free.token_ids[:k], skip_special_tokens=True)[len(prev) :].strip()
        if added and added not in prev:
            break
    else:
        raise AssertionError(f"no usable stop string in {free.text!r}")
    sampling = SamplingConfig(max_new_tokens=12, stop=(added,), seed=5)
    got = HFBackend(model=backend.model, tokenizer=backend.tokenizer).generate([prompt], sampling)[
        0
    ]
    assert got.token_ids == free.token_ids[:k]
    assert got.finish_reason == "stop" and got.text.endswith(added)


def test_cut_keeps_the_sampled_eos_and_drops_padding(backend: HFBackend) -> None:
    eos = backend.eos_ids[0]
    assert backend._cut([17, 18, eos, eos, eos], ()) == (3, "stop")
    assert backend._cut([17, 18, 19], ()) == (3, "length")


def test_sync_weights_shares_the_module(backend: HFBackend) -> None:
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(tiny_model())
    hf = HFBackend(model=other, tokenizer=backend.tokenizer)
    prompts = _prompts(backend)[:1]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=5)
    before = hf.generate(prompts, greedy)[0].token_ids
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5, alpha=1.0)
    assert hf.sync_weights(other) < 0.1
    assert hf.generate(prompts, greedy)[0].token_ids != before


def test_a_backend_built_with_the_learner_shares_its_module_and_syncs_from_it(
    backend: HFBackend,
) -> None:
    from creditgym.trainers.learner import Learner, LearnerConfig

    learner = Learner(LearnerConfig(), tiny_model())
    hf = make_backend("hf", tiny_model(), learner=learner)
    assert hf.model is learner.model and hf.tokenizer is learner.tokenizer
    prompts = _prompts(backend)[:1]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=5)
    before = hf.generate(prompts, greedy)[0].token_ids
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(torch.randn_like(p) * 0.5, alpha=1.0)
    assert hf.sync_weights(learner) < 0.1
    assert hf.model is learner.model
    assert hf.generate(prompts, greedy)[0].token_ids != before
    with pytest.raises(TypeError, match="needs a learner"):
        hf.sync_weights("not/a/learner")


def test_bad_input_is_a_clear_error(backend: HFBackend) -> None:
    with pytest.raises(ValueError, match="at least one token"):
        backend.generate([[]], SamplingConfig())
    with pytest.raises(ValueError, match="max_new_tokens"):
        backend.generate([[1, 2]], SamplingConfig(max_new_tokens=0))
    with pytest.raises(KeyError, match="unknown backend 'hff'.*did you mean"):
        make_backend("hff", tiny_model())
