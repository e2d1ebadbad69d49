"""`LLMAgent` on the tiny model: exact token records, templates, context limits, concat mode."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from creditgym.agents.backends import SamplingConfig
from creditgym.agents.backends.base import Generation
from creditgym.agents.backends.hf import HFBackend
from creditgym.agents.base import Context
from creditgym.agents.llm import LLMAgent
from creditgym.agents.models import tiny_model
from creditgym.agents.prompts import TEMPLATES


class CountingBackend:
    """Wraps a real backend and records every `generate` call."""

    supports_training = True

    def __init__(self, inner: HFBackend):
        self.inner = inner
        self.calls: list[tuple[list[list[int]], list[Generation]]] = []

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig
    ) -> list[Generation]:
        gens = self.inner.generate(prompts, sampling)
        self.calls.append(([list(p) for p in prompts], gens))
        return gens

    def sync_weights(self, model: object) -> float:
        return 0.0

    def close(self) -> None:
        pass


class ScriptedBackend:
    """Returns fixed texts, tokenised by the real tokenizer (to test parsing and spans)."""

    supports_training = True

    def __init__(self, tokenizer, texts: list[str]):
        self.tokenizer = tokenizer
        self.texts = texts

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig
    ) -> list[Generation]:
        out = []
        for text in self.texts[: len(prompts)]:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [
                self.tokenizer.eos_token_id
            ]
            out.append(
                Generation(
                    ids, [-1.0] * len(ids), self.tokenizer.decode(ids, skip_special_tokens=True)
                )
            )
        return out

    def sync_weights(self, model: object) -> float:
        return 0.0

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def hf() -> HFBackend:
    return HFBackend(tiny_model())


def _ctx(**kw) -> Context:
    base = {
        "task": "put the red gem in the chest in the hall",
        "observation": "You are in the hall. You see a chest. Doors: a door to the attic.",
        "admissible_actions": ["go to attic", "look", "examine chest"],
        "family": "keyrooms",
    }
    base.update(kw)
    return Context(**base)


def test_turns_record_exactly_what_was_sampled(hf: HFBackend) -> None:
    backend = CountingBackend(hf)
    agent = LLMAgent(backend, hf.tokenizer, sampling=SamplingConfig(max_new_tokens=8, seed=0))
    contexts = [_ctx(), _ctx(family="no-such-family", episode=1)]
    turns = agent.act(contexts)
    assert len(backend.calls) == 1  # one batched generation per act
    prompts, gens = backend.calls[0]
    for turn, prompt, gen in zip(turns, prompts, gens):
        assert turn.prompt_ids == prompt
        assert turn.response_ids == gen.token_ids and turn.logprobs == gen.logprobs
        assert turn.text == gen.text
        # the tiny random model writes gibberish: sent as-is, marked malformed
        assert not turn.format_ok and turn.action == gen.text.strip()
    rendered = hf.tokenizer.decode(turns[0].prompt_ids)
    assert TEMPLATES["keyrooms"].system in rendered
    assert "Admissible actions: ['go to attic', 'look', 'examine chest']" in rendered
    assert "<action>" in rendered and rendered.endswith("<|im_start|>assistant\n")
    generic = hf.tokenizer.decode(turns[1].prompt_ids)
    assert TEMPLATES["generic"].system in generic  # unknown family -> generic template
    assert agent.metrics()["format_errors"] == 2


def test_history_window_and_step_numbers(hf: HFBackend) -> None:
    agent = LLMAgent(
        ScriptedBackend(hf.tokenizer, ["<action>look</action>"]), hf.tokenizer, history_length=2
    )
    history = [(f"obs {i}", f"act {i}") for i in range(5)]
    turn = agent.act([_ctx(history=history)])[0]
    text = hf.tokenizer.decode(turn.prompt_ids)
    assert (
        "obs 2" not in text
        and "[Step 4] Observation: obs 3" in text
        and "[Step 5] Action: act 4" in text
    )
    assert turn.format_ok and turn.action == "look"


@pytest.mark.parametrize("limit", [170, 220, 400, 700])
def test_prompt_never_exceeds_the_limit(hf: HFBackend, limit: int) -> None:
    long_obs = "You see " + ", ".join(f"a box number {i}" for i in range(300)) + "."
    history = [(long_obs, f"open box {i}") for i in range(3)]
    actions = [f"open box {i}" for i in range(200)]
    agent = LLMAgent(
        ScriptedBackend(hf.tokenizer, ["<action>look</action>"]),
        hf.tokenizer,
        history_length=3,
        max_prompt_tokens=limit,
    )
    turn = agent.act([_ctx(observation=long_obs, history=history, admissible_actions=actions)])[0]
    assert len(turn.prompt_ids) <= limit
    m = agent.metrics()
    assert m["history_dropped"] == 3 and m["observations_cut"] == 1
    text = hf.tokenizer.decode(turn.prompt_ids)
    assert "[cut to fit the context]" in text  # never silent
    assert text.endswith("<|im_start|>assistant\n")


def test_impossible_limit_is_a_clear_error(hf: HFBackend) -> None:
    agent = LLMAgent(ScriptedBackend(hf.tokenizer, ["x"]), hf.tokenizer, max_prompt_tokens=20)
    with pytest.raises(ValueError, match="raise max_prompt_tokens"):
        agent.act([_ctx()])


def test_hiper_spans_point_at_the_tag_tokens(hf: HFBackend) -> None:
    text = "<think>plan</think><switch>SWITCH</switch><subgoal>find the key</subgoal><action>go to attic</action>"
    agent = LLMAgent(ScriptedBackend(hf.tokenizer, [text]), hf.tokenizer, output_format="hiper")
    turn = agent.act([_ctx()])[0]
    assert turn.format_ok and turn.action == "go to attic"
    assert turn.extras["parsed"]["subgoal"] == "find the key"
    decode = hf.tokenizer.decode
    for name, tag in (("switch", "SWITCH"), ("subgoal", "find the key"), ("action", "go to attic")):
        ((a, b),) = turn.spans[name]
        piece = decode(turn.response_ids[a:b])
        assert f"<{name}>{tag}</{name}>" in piece
        assert tag not in decode(turn.response_ids[:a]) or name == "switch"


def test_concat_mode_extends_the_sequence_without_retokenising(hf: HFBackend) -> None:
    backend = CountingBackend(hf)
    agent = LLMAgent(
        backend, hf.tokenizer, context="concat", sampling=SamplingConfig(max_new_tokens=6, seed=1)
    )
    first = agent.act([_ctx(step=0)])[0]
    second = agent.act(
        [_ctx(step=1, observation="Nothing happens.", history=[("o", first.action)])]
    )[0]
    prefix = list(first.prompt_ids) + list(first.response_ids)
    assert second.prompt_ids[: len(prefix)] == prefix
    env_text = hf.tokenizer.decode(second.prompt_ids[len(prefix) :])
    assert "Nothing happens." in env_text and env_text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user" in env_text
    # A new episode in the same slot starts afresh.
    third = agent.act([_ctx(step=0)])[0]
    assert len(third.prompt_ids) == len(first.prompt_ids)


def test_concat_mode_restarts_when_the_context_is_full(hf: HFBackend) -> None:
    agent = LLMAgent(
        ScriptedBackend(hf.tokenizer, ["<action>look</action>"]),
        hf.tokenizer,
        context="concat",
        max_prompt_tokens=260,
    )
    lengths = []
    for step in range(6):
        turn = agent.act([_ctx(step=step, observation=f"Room {step}. " + "Dust. " * 20)])[0]
        lengths.append(len(turn.prompt_ids))
    assert max(lengths) <= 260
    assert agent.metrics()["concat_restarts"] >= 1
    assert any(b < a for a, b in zip(lengths, lengths[1:]))


def test_bad_options_are_clear_errors(hf: HFBackend) -> None:
    with pytest.raises(ValueError, match="output_format"):
        LLMAgent(hf, hf.tokenizer, output_format="json")
    with pytest.raises(ValueError, match="context"):
        LLMAgent(hf, hf.tokenizer, context="window")
