"""Response prefixes and mapping outputs to admissible actions (for models that cannot yet follow
the tag format)."""

from __future__ import annotations

import pytest

from creditgym.agents.llm import LLMAgent
from creditgym.agents.parsing import match_admissible, parse
from tests.agents.test_llm import ScriptedBackend, _ctx, hf  # noqa: F401  (fixture)

ACTS = ["go to study", "take blue key", "look", "examine chest", "examine bench"]


@pytest.mark.parametrize(
    ("text", "action", "recovered"),
    [
        ("<action>look</action>", "look", False),  # already admissible
        ("<action> Go To  Study </action>", "go to study", True),  # case and blanks
        ("<action>The key to examine chest</action>", "examine chest", True),  # named inside
        ("<action>no tag closes: examine bench, then look", "examine bench", True),  # first named
        ("I will take blue key now", "take blue key", True),  # no tags at all
    ],
)
def test_outputs_map_to_the_admissible_action_they_name(text, action, recovered):
    parsed, rec = match_admissible(parse(text, "action"), text, ACTS)
    assert (parsed.action, parsed.format_ok, rec) == (action, True, recovered)


def test_outputs_that_name_nothing_stay_malformed_or_as_written():
    text = "<action>walk north</action>"
    parsed, rec = match_admissible(parse(text, "action"), text, ACTS)
    assert (parsed.action, parsed.format_ok, rec) == ("walk north", True, False)
    text = "I have no idea"
    parsed, rec = match_admissible(parse(text, "action"), text, ACTS)
    assert not parsed.format_ok and not rec


def test_the_prefix_is_prompt_not_response_and_is_parsed(hf):  # noqa: F811
    backend = ScriptedBackend(hf.tokenizer, ["The key to examine chest</action>"])
    plain = LLMAgent(backend, hf.tokenizer)
    agent = LLMAgent(backend, hf.tokenizer, response_prefix="<action>", action_match="admissible")
    ctx = _ctx(admissible_actions=["go to attic", "look", "examine chest"])
    (turn,) = agent.act([ctx])
    prefix_ids = hf.tokenizer.encode("<action>", add_special_tokens=False)
    assert turn.prompt_ids[-len(prefix_ids) :] == prefix_ids
    assert turn.prompt_ids[: -len(prefix_ids)] == plain._prompt(ctx)
    assert "<action>" not in hf.tokenizer.decode(turn.response_ids)
    assert turn.action == "examine chest" and turn.format_ok
    assert agent.metrics()["recovered"] == 1
    (strict,) = LLMAgent(backend, hf.tokenizer, response_prefix="<action>").act([ctx])
    assert strict.action == "The key to examine chest"


def test_bad_options_are_clear_errors(hf):  # noqa: F811
    with pytest.raises(ValueError, match="action_match"):
        LLMAgent(hf, hf.tokenizer, action_match="fuzzy")
    with pytest.raises(ValueError, match="hiper"):
        LLMAgent(hf, hf.tokenizer, output_format="hiper", response_prefix="<switch>")
