"""What our OpenEnv server and client agree on: field names and JSON-safe `info` dicts.

This module imports nothing beyond the standard library and numpy, so the client side needs no
``openenv`` install.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

#: Observation fields the server sends besides the ``info`` remainder (OpenEnv adds ``done``,
#: ``reward`` and ``metadata``).
TYPED_INFO_KEYS = ("admissible_actions", "action_valid", "won", "score", "state_key", "task")
#: The fenced JSON block in the metadata route's ``readme_content`` that describes the env.
_SPEC_BLOCK = re.compile(r"```json creditgym-spec\n(.*?)\n```", re.S)


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types (numpy scalars and arrays, tuples and sets become lists)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def split_info(info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(typed fields, the rest) of a step's `info`, both JSON-safe."""
    info = jsonable(info)
    typed = {key: info[key] for key in TYPED_INFO_KEYS if key in info}
    rest = {key: value for key, value in info.items() if key not in typed}
    return typed, rest


def spec_markdown(spec: dict[str, Any]) -> str:
    """The metadata route's README: a short description plus the spec as a fenced JSON block."""
    lines = [f"# {spec['env_id']} (creditgym, generator version {spec['generator_version']})", ""]
    for split, panel in spec["panels"].items():
        lines.append(f"- panel `{split}`: {len(panel['ids'])} tasks, hash `{panel['hash']}`")
    lines += ["", "```json creditgym-spec", json.dumps(spec), "```", ""]
    return "\n".join(lines)


def parse_spec(readme: str | None) -> dict[str, Any] | None:
    """The spec written by `spec_markdown`, or None when `readme` has none (a foreign server)."""
    match = _SPEC_BLOCK.search(readme or "")
    return json.loads(match.group(1)) if match else None
