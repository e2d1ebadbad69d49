"""Tools described by JSON schemas, the ``<tool_call>`` wire format, and argument checking.

A `Tool` is a name, a description, a JSON schema of its arguments (the OpenAI / Hermes function
format) and a Python function. `parse_tool_call` turns the text inside ``<tool_call>...</tool_call>``
into ``(name, arguments)``, and `check_arguments` checks arguments against the schema. Both raise
`ToolError` with a message written for the agent: it says what was wrong and what is expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ToolError(Exception):
    """A tool call failed; the message is shown to the agent inside ``<tool_response>``."""


@dataclass(frozen=True)
class Tool:
    """A callable tool and the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    read_only: bool = True
    """False for tools that change the app's state (their effect shows in the state, not here)."""

    def schema(self) -> dict[str, Any]:
        """The function description shown to the agent."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def __call__(self, arguments: dict[str, Any]) -> Any:
        check_arguments(self, arguments)
        return self.fn(**arguments)


def parse_tool_call(text: str) -> tuple[str, dict[str, Any]]:
    """``{"name": ..., "arguments": {...}}`` -> (name, arguments). Arguments may also be a JSON
    string of an object, as some chat models write them."""
    text = text.strip()
    try:
        call = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolError(
            f"the tool call is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}). "
            'Write <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>.'
        ) from None
    if not isinstance(call, dict):
        raise ToolError(
            f"the tool call must be a JSON object with 'name' and 'arguments', got a "
            f"{_json_type(call)}."
        )
    unknown = sorted(set(call) - {"name", "arguments"})
    if unknown:
        raise ToolError(
            f"unexpected keys {unknown} in the tool call; use only 'name' and 'arguments'."
        )
    name = call.get("name")
    if not isinstance(name, str) or not name:
        raise ToolError("the tool call needs a 'name' string naming the tool.")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            raise ToolError("'arguments' is a string that is not a JSON object.") from None
    if not isinstance(arguments, dict):
        raise ToolError(f"'arguments' must be a JSON object, got a {_json_type(arguments)}.")
    return name, arguments


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _check_value(where: str, schema: dict[str, Any], value: Any) -> None:
    expected = schema.get("type")
    if expected is not None:
        ok = isinstance(value, _TYPES[expected]) and not (
            expected in ("integer", "number") and isinstance(value, bool)
        )
        if expected == "integer" and isinstance(value, float) and value.is_integer():
            ok = False  # 3.0 is not an integer in JSON schema terms here: be strict, say so
        if not ok:
            raise ToolError(
                f"{where} must be {'an' if expected[0] in 'aeiou' else 'a'} {expected}, "
                f"got {_json_type(value)} {json.dumps(value)[:60]}."
            )
    if "enum" in schema and value not in schema["enum"]:
        raise ToolError(
            f"{where} must be one of {json.dumps(schema['enum'])}, got {json.dumps(value)[:60]}."
        )
    if expected == "array" and "items" in schema:
        for i, item in enumerate(value):
            _check_value(f"{where}[{i}]", schema["items"], item)
    if "minimum" in schema and value < schema["minimum"]:
        raise ToolError(f"{where} must be >= {schema['minimum']}, got {value}.")
    if "maximum" in schema and value > schema["maximum"]:
        raise ToolError(f"{where} must be <= {schema['maximum']}, got {value}.")
    if (
        "pattern" in schema
        and isinstance(value, str)
        and not re.fullmatch(schema["pattern"], value)
    ):
        hint = schema.get("description", schema["pattern"])
        raise ToolError(f"{where} must look like {hint}, got {json.dumps(value)[:60]}.")


def check_arguments(tool: Tool, arguments: dict[str, Any]) -> None:
    """Check `arguments` against the tool's schema (types, enums, required, no extras)."""
    props = tool.parameters.get("properties", {})
    missing = [k for k in tool.parameters.get("required", []) if k not in arguments]
    if missing:
        raise ToolError(f"{tool.name} is missing required argument(s) {missing}.")
    extra = sorted(set(arguments) - set(props))
    if extra:
        raise ToolError(f"{tool.name} got unknown argument(s) {extra}; it takes {sorted(props)}.")
    for key, value in arguments.items():
        _check_value(f"argument '{key}' of {tool.name}", props[key], value)


def format_response(payload: Any) -> str:
    """A tool result as the agent sees it: JSON for structures, plain text for strings."""
    body = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"<tool_response>{body}</tool_response>"
