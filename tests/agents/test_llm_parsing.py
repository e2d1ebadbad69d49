"""Output parsers: well-formed outputs give the env's action; malformed ones never raise."""

from __future__ import annotations

import pytest

from creditgym.agents.parsing import char_to_token_spans, parse


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("<think>the key is here</think><action>take red key</action>", "take red key"),
        ("<action>  go to hall \n</action>", "go to hall"),
        ("Sure.\n<think>x</think>\n<action>look</action>\n", "look"),
    ],
)
def test_action_format_ok(text: str, action: str) -> None:
    out = parse(text, "action")
    assert out.format_ok and out.action == action and not out.error
    start, end = out.char_spans["action"]
    assert text[start:end].startswith("<action>") and text[start:end].endswith("</action>")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("go to hall", "exactly one <action>"),
        ("<action>go</action><action>look</action>", "exactly one <action>"),
        ("<action></action>", "empty <action>"),
        ("<action>go to hall", "never closed"),
        ("go</action>", "without a matching"),
        ("<think><action>look</action></think>", "opened inside"),
        ("<action>look</action><think>late</think>", "before the answer"),
        ("<think>a</think><think>b</think><action>look</action>", "more than one <think>"),
        ("", "exactly one <action>"),
    ],
)
def test_action_malformed_is_sent_as_is(text: str, error: str) -> None:
    out = parse(text, "action")
    assert not out.format_ok
    assert error in out.error
    assert out.action == text.strip()  # the env sees what the model wrote and marks it invalid


def test_search_format() -> None:
    out = parse("<think>need capital</think><search> capital of France </search>", "search")
    assert out.format_ok and out.action == "<search>capital of France</search>"
    assert out.fields == {"think": "need capital", "search": "capital of France"}
    out = parse("<answer>Paris</answer>", "search")
    assert out.format_ok and out.action == "<answer>Paris</answer>"
    for bad in (
        "<search>a</search><answer>b</answer>",
        "<search> </search>",
        "Paris",
        "<answer>Paris",
    ):
        out = parse(bad, "search")
        assert not out.format_ok and out.action == bad.strip()


def test_tool_call_format_checks_json() -> None:
    good = '<tool_call>{"name": "calc", "arguments": {"expr": "2+2"}}</tool_call>'
    out = parse("<think>add</think>" + good, "tool")
    assert out.format_ok and out.action == good
    assert parse("<answer>4</answer>", "tool").format_ok
    cases = {
        "<tool_call>{name: calc}</tool_call>": "not valid JSON",
        '<tool_call>["calc"]</tool_call>': 'string "name"',
        '<tool_call>{"arguments": {}}</tool_call>': 'string "name"',
        '<tool_call>{"name": "c", "arguments": [1]}</tool_call>': "must be a JSON object",
        good + good: "exactly one",
    }
    for text, error in cases.items():
        out = parse(text, "tool")
        assert not out.format_ok and error in out.error, text


def test_hiper_format() -> None:
    text = "<switch>switch</switch><subgoal>get the red key</subgoal><action>go to hall</action>"
    out = parse(text, "hiper")
    assert out.format_ok and out.action == "go to hall"
    assert out.fields["switch"] == "SWITCH" and out.fields["subgoal"] == "get the red key"
    assert set(out.char_spans) == {"switch", "subgoal", "action"}
    cases = {
        "<subgoal>g</subgoal><switch>KEEP</switch><action>a</action>": "in that order",
        "<switch>MAYBE</switch><subgoal>g</subgoal><action>a</action>": "KEEP or SWITCH",
        "<switch>KEEP</switch><action>a</action>": "exactly one <subgoal>",
        "<switch>KEEP</switch><subgoal>g</subgoal><action> </action>": "empty <action>",
    }
    for bad, error in cases.items():
        out = parse(bad, "hiper")
        assert not out.format_ok and error in out.error, bad
        assert out.action == bad.strip()


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown output_format 'xml'"):
        parse("x", "xml")


def test_char_to_token_spans() -> None:
    # tokens: "<a>" "bc" "</a>" "de"  -> cumulative ends 3, 5, 9, 11
    ends = [3, 5, 9, 11]
    spans = char_to_token_spans({"a": (0, 9), "tail": (9, 11), "mid": (4, 6)}, ends)
    assert spans == {"a": [(0, 3)], "tail": [(3, 4)], "mid": [(1, 3)]}
