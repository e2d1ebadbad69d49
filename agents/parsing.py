"""Parsers that turn a model's raw text into the action string an env receives.

Four output formats, one per family of papers:

- ``"action"`` (verl-agent / GiGPO): ``<think>...</think><action>go north</action>``; the env
  receives the text inside ``<action>``.
- ``"search"`` (Search-R1): ``<search>query</search>`` or ``<answer>text</answer>``; the env
  receives the tag itself (the Search env parses its own protocol), with any reasoning removed.
- ``"tool"``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (JSON checked here) or
  ``<answer>text</answer>``; the env receives the tag.
- ``"hiper"`` (HiPER): ``<switch>KEEP|SWITCH</switch><subgoal>...</subgoal><action>...</action>``;
  the env receives the action, the switch and subgoal go to ``fields``.

A parser never raises. Malformed output gives ``format_ok=False`` and the raw text (stripped) as
the action, so the env sees exactly what the model wrote and marks it invalid: validity is the
env's decision, and the trainer penalises it like any other invalid action.

Every result carries the character span of each part (tags included) so the agent can route
per-span advantages to the right response tokens (HiPER).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from creditgym.envs.base import ACTION_MATCH  # noqa: F401  (re-exported: the agent option)

OUTPUT_FORMATS = ("action", "search", "tool", "hiper")


@dataclass
class ParsedOutput:
    """The result of parsing one response."""

    #: The string sent to the env.
    action: str
    #: Whether the response followed the format exactly.
    format_ok: bool
    #: Parsed parts by name ("think", "action", "search", "answer", "tool_call", "switch",
    #: "subgoal").
    fields: dict[str, str] = field(default_factory=dict)
    #: Character spans [start, end) of the parts in the raw text, tags included.
    char_spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Why the format check failed ("" when it passed).
    error: str = ""


def _tag_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL)


_TAGS = {
    n: _tag_re(n) for n in ("think", "action", "search", "answer", "tool_call", "switch", "subgoal")
}
_OPEN = re.compile(r"<(/?)(think|action|search|answer|tool_call|switch|subgoal)>")


def _find(text: str, name: str) -> list[re.Match[str]]:
    return list(_TAGS[name].finditer(text))


def _balanced(text: str) -> str:
    """Return an error if tags are unbalanced or nested, else ""."""
    stack: list[str] = []
    for m in _OPEN.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if not closing:
            if stack:
                return f"<{name}> opened inside <{stack[-1]}>"
            stack.append(name)
        else:
            if not stack or stack[-1] != name:
                return f"</{name}> without a matching <{name}>"
            stack.pop()
    if stack:
        return f"<{stack[-1]}> is never closed"
    return ""


def _malformed(text: str, error: str, fields: dict[str, str] | None = None) -> ParsedOutput:
    return ParsedOutput(action=text.strip(), format_ok=False, fields=fields or {}, error=error)


def _think(text: str, before: int) -> tuple[dict[str, str], dict[str, tuple[int, int]], str]:
    """Optional single <think> block that must end before position `before`."""
    thinks = _find(text, "think")
    if len(thinks) > 1:
        return {}, {}, "more than one <think> block"
    if thinks:
        m = thinks[0]
        if m.end() > before:
            return {}, {}, "<think> must come before the answer tags"
        return {"think": m.group(1).strip()}, {"think": m.span()}, ""
    return {}, {}, ""


def parse_action(text: str) -> ParsedOutput:
    """``[<think>...</think>] <action>...</action>``: exactly one non-empty action."""
    err = _balanced(text)
    if err:
        return _malformed(text, err)
    actions = _find(text, "action")
    if len(actions) != 1:
        return _malformed(text, f"expected exactly one <action> block, found {len(actions)}")
    m = actions[0]
    action = m.group(1).strip()
    if not action:
        return _malformed(text, "empty <action>")
    fields, spans, err = _think(text, m.start())
    if err:
        return _malformed(text, err)
    return ParsedOutput(action, True, {**fields, "action": action}, {**spans, "action": m.span()})


def _single_final(text: str, names: tuple[str, ...]) -> tuple[str, re.Match[str]] | str:
    found = [(n, m) for n in names for m in _find(text, n)]
    if len(found) != 1:
        tags = " or ".join(f"<{n}>" for n in names)
        return f"expected exactly one {tags} block, found {len(found)}"
    return found[0]


def parse_search(text: str) -> ParsedOutput:
    """``[<think>...</think>] <search>q</search>`` or ``... <answer>a</answer>`` (Search-R1)."""
    err = _balanced(text)
    if err:
        return _malformed(text, err)
    got = _single_final(text, ("search", "answer"))
    if isinstance(got, str):
        return _malformed(text, got)
    name, m = got
    content = m.group(1).strip()
    if not content:
        return _malformed(text, f"empty <{name}>")
    fields, spans, err = _think(text, m.start())
    if err:
        return _malformed(text, err)
    return ParsedOutput(
        f"<{name}>{content}</{name}>", True, {**fields, name: content}, {**spans, name: m.span()}
    )


def parse_tool(text: str) -> ParsedOutput:
    """``[<think>...</think>] <tool_call>{"name": ..., "arguments": {...}}</tool_call>`` or an
    ``<answer>``; the tool call must be a JSON object with a string ``name`` and an object
    ``arguments``."""
    err = _balanced(text)
    if err:
        return _malformed(text, err)
    got = _single_final(text, ("tool_call", "answer"))
    if isinstance(got, str):
        return _malformed(text, got)
    name, m = got
    content = m.group(1).strip()
    if not content:
        return _malformed(text, f"empty <{name}>")
    if name == "tool_call":
        try:
            call = json.loads(content)
        except json.JSONDecodeError as exc:
            return _malformed(text, f"<tool_call> is not valid JSON: {exc.msg}")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return _malformed(text, '<tool_call> needs a JSON object with a string "name"')
        if not isinstance(call.get("arguments", {}), dict):
            return _malformed(text, '<tool_call> "arguments" must be a JSON object')
    fields, spans, err = _think(text, m.start())
    if err:
        return _malformed(text, err)
    return ParsedOutput(
        f"<{name}>{content}</{name}>", True, {**fields, name: content}, {**spans, name: m.span()}
    )


SWITCH_VALUES = ("KEEP", "SWITCH")


def parse_hiper(text: str) -> ParsedOutput:
    """``[<think>..</think>] <switch>KEEP|SWITCH</switch><subgoal>..</subgoal><action>..</action>``
    in that order, each exactly once."""
    err = _balanced(text)
    if err:
        return _malformed(text, err)
    parts: dict[str, re.Match[str]] = {}
    for name in ("switch", "subgoal", "action"):
        found = _find(text, name)
        if len(found) != 1:
            return _malformed(text, f"expected exactly one <{name}> block, found {len(found)}")
        parts[name] = found[0]
    fields = {n: m.group(1).strip() for n, m in parts.items()}
    if not (parts["switch"].end() <= parts["subgoal"].start() < parts["action"].start()):
        return _malformed(text, "expected <switch>, <subgoal>, <action> in that order", fields)
    fields["switch"] = fields["switch"].upper()
    if fields["switch"] not in SWITCH_VALUES:
        return _malformed(
            text, f"<switch> must be KEEP or SWITCH, got {fields['switch']!r}", fields
        )
    if not fields["action"]:
        return _malformed(text, "empty <action>", fields)
    think, spans, err = _think(text, parts["switch"].start())
    if err:
        return _malformed(text, err, fields)
    spans.update({n: m.span() for n, m in parts.items()})
    return ParsedOutput(fields["action"], True, {**think, **fields}, spans)


PARSERS = {
    "action": parse_action,
    "search": parse_search,
    "tool": parse_tool,
    "hiper": parse_hiper,
}


def parse(text: str, output_format: str) -> ParsedOutput:
    """Parse `text` in one of `OUTPUT_FORMATS`."""
    try:
        parser = PARSERS[output_format]
    except KeyError:
        raise ValueError(
            f"unknown output_format {output_format!r}; choose one of {list(OUTPUT_FORMATS)}"
        ) from None
    return parser(text)


def match_admissible(
    parsed: ParsedOutput, text: str, admissible: Sequence[str]
) -> tuple[ParsedOutput, bool]:
    """Map an output to the admissible action it names (see ``LLMAgent(action_match=...)``).

    Returns the (possibly replaced) parse and whether a replacement happened. A parsed action that
    equals an admissible one up to case and blanks is normalised to it; otherwise the admissible
    action occurring first in the parsed action, or failing that in the whole text, is taken
    (longest on a tie). Nothing named: the parse is returned unchanged.
    """
    by_norm = {" ".join(a.lower().split()): a for a in admissible}
    if parsed.format_ok:
        exact = by_norm.get(" ".join(parsed.action.lower().split()))
        if exact is not None:
            return replace(parsed, action=exact), exact != parsed.action
    for source in ((parsed.action,) if parsed.format_ok else ()) + (text,):
        hay = " ".join(source.lower().split())
        best: tuple[int, int, str] | None = None
        for norm, action in by_norm.items():
            i = hay.find(norm)
            if i >= 0 and (best is None or (i, -len(norm)) < best[:2]):
                best = (i, -len(norm), action)
        if best is not None:
            fields = {**parsed.fields, "action": best[2]}
            return ParsedOutput(best[2], True, fields, parsed.char_spans, ""), True
    return parsed, False


def char_to_token_spans(
    char_spans: dict[str, tuple[int, int]], token_ends: list[int]
) -> dict[str, list[tuple[int, int]]]:
    """Map character spans to token index ranges [start, end).

    ``token_ends[k]`` is the length of the text decoded from tokens ``0..k``. A token belongs to a
    span when its characters overlap the span, so the tag tokens are included.
    """
    out: dict[str, list[tuple[int, int]]] = {}
    starts = [0, *token_ends[:-1]]
    for name, (c0, c1) in char_spans.items():
        toks = [k for k, (s, e) in enumerate(zip(starts, token_ends)) if s < c1 and e > c0]
        if toks:
            out[name] = [(toks[0], toks[-1] + 1)]
    return out
