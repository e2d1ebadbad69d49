"""`creditgym/ToolUse-v0`: solve a task by calling JSON-schema tools, then answer.

Protocol: the agent writes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` and gets
``<tool_response>...</tool_response>``; ``<answer>...</answer>`` ends the episode. Malformed JSON,
an unknown tool or arguments that do not match the tool's schema get a clear error inside
``<tool_response>`` (``action_valid=False``) and the episode goes on. A turn with neither tag, or
with both, is invalid too. Only the first ``<tool_call>`` of a turn runs.

The ``python`` tool runs code in `creditgym.envs.tooluse.sandbox.PythonSandbox` (a separate, isolated
process; never this one). When isolation is unavailable it answers with a clear error instead
of running code, unless the env was made with ``python_isolation="none"``.

Reward 1.0 when the task's checker accepts the outcome (the answer, or for calendar tasks the final
app state), else 0.0. ``info["ground_truth"]`` is the expected answer ("done" for calendar tasks,
whose goal state is in ``info["goal"]``). ``state_key``: the task, the app's state, and the set of
distinct successful read-only calls made so far (the information the agent has gathered).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from creditgym.envs.base import ActionSyntax, TextEnv
from creditgym.envs.tooluse.sandbox import PythonSandbox, SandboxLimits, SandboxUnavailable
from creditgym.envs.tooluse.tasks import FAMILIES, Task, make_task, task_ids
from creditgym.envs.tooluse.tools import Tool, ToolError, format_response, parse_tool_call

_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

PROTOCOL = (
    'To call a tool, write <tool_call>{"name": "<tool name>", "arguments": {...}}</tool_call>; '
    "its result comes back inside <tool_response></tool_response>. One tool call per turn. "
    "When you are done, write <answer>your final answer</answer>."
)


def python_tool(sandbox: PythonSandbox) -> Tool:
    """The sandboxed ``python`` tool: runs a script, returns its stdout (and errors)."""

    def run(code: str) -> str:
        try:
            result = sandbox.run(code)
        except SandboxUnavailable as exc:
            raise ToolError(f"the Python tool is disabled here: {exc}") from None
        parts = []
        if result.stdout:
            parts.append(result.stdout.rstrip("\n"))
        if result.error:
            stderr = result.stderr.strip()
            tail = "\n".join(stderr.splitlines()[-6:]) if stderr else ""
            parts.append(f"Error: {result.error}" + (f"\n{tail}" if tail else ""))
        return "\n".join(parts) if parts else "(no output; use print() to show results)"

    return Tool(
        "python",
        "Run a Python 3 script in a sandbox (no network, no files kept, "
        f"{sandbox.limits.wall_time_s:g} s limit) and return what it prints.",
        {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "the script; print results"}},
            "required": ["code"],
        },
        run,
    )


class ToolUseEnv(TextEnv):
    """Tool-calling tasks with verifiable outcomes (see the module docstring).

    Keyword arguments (all optional):

    - ``families``: a subset of ``("arithmetic", "database", "calendar", "reasoning")`` (all by
      default); panels interleave them, so any prefix of a panel mixes them evenly;
    - ``python_isolation``: "namespace" (default; refuses to run code without namespaces) or
      "none" (explicit opt-out: a subprocess with rlimits only);
    - ``python_limits``: fields of `SandboxLimits`, e.g. ``{"wall_time_s": 2.0}``;
    - ``max_steps``: turns per episode (12).
    """

    env_name: ClassVar[str] = "creditgym/ToolUse-v0"
    generator_version: ClassVar[str] = "1"
    family: ClassVar[str] = "tooluse"
    action_syntax: ClassVar[ActionSyntax] = "tool"
    default_max_steps: ClassVar[int] = 12

    def __init__(
        self,
        split: str = "train",
        families: Sequence[str] | None = None,
        python_isolation: str = "namespace",
        python_limits: dict[str, Any] | None = None,
        max_steps: int | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        fams = tuple(families) if families is not None else FAMILIES
        unknown = sorted(set(fams) - set(FAMILIES))
        if unknown or not fams:
            raise ValueError(
                f"families must be a non-empty subset of {list(FAMILIES)}, got {unknown or fams}"
            )
        self.families = fams
        try:
            limits = SandboxLimits(**(python_limits or {}))
        except TypeError as exc:
            raise ValueError(
                f"python_limits: {exc}; fields are {list(SandboxLimits.__dataclass_fields__)}"
            ) from None
        self.sandbox = PythonSandbox(limits, isolation=python_isolation)
        self._python = python_tool(self.sandbox)
        self.task: Task | None = None
        self._tools: dict[str, Tool] = {}
        self._calls: set[str] = set()
        self._answer: str | None = None
        self._plan_pos = 0

    def task_ids(self, split: str) -> Sequence[str]:
        return task_ids(split, self.families)

    # ----------------------------------------------------------------- episode
    def _reset_task(self, task_id: str) -> tuple[str, dict[str, Any]]:
        self.task = make_task(task_id, self._python)
        self._tools = {t.name: t for t in self.task.tools}
        self._calls = set()
        self._answer = None
        self._plan_pos = 0
        schemas = "\n".join(json.dumps(t.schema()) for t in self.task.tools)
        obs = f"{self.task.instruction}\n\nTools:\n{schemas}\n\n{PROTOCOL}"
        return obs, self._info(valid=True)

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        self._plan_pos += 1
        calls = _CALL.findall(action)
        answers = _ANSWER.findall(action)
        if calls and answers:
            return self._invalid(
                "Invalid turn: it has both <tool_call> and <answer>. Either call a tool or answer."
            )
        if not calls and not answers:
            return self._invalid(
                "Invalid turn: no <tool_call>...</tool_call> or <answer>...</answer> found. "
                + PROTOCOL
            )
        if answers:
            self._answer = answers[0].strip()
            won = bool(self.task.check(self._answer))
            info = self._info(valid=True)
            info["won"] = won
            info["score"] = float(won)
            return f"Answer submitted: {self._answer}", float(won), True, info
        try:
            name, arguments = parse_tool_call(calls[0])
            tool = self._tools.get(name)
            if tool is None:
                raise ToolError(
                    f"unknown tool {name!r}; available tools: {', '.join(self._tools)}."
                )
            result = tool(arguments)
        except ToolError as exc:
            return format_response(f"Error: {exc}"), 0.0, False, self._info(valid=False)
        if tool.read_only:
            self._calls.add(json.dumps([name, arguments], sort_keys=True))
        return format_response(result), 0.0, False, self._info(valid=True)

    def _invalid(self, message: str) -> tuple[str, float, bool, dict[str, Any]]:
        return message, 0.0, False, self._info(valid=False)

    def _info(self, valid: bool) -> dict[str, Any]:
        t = self.task
        app_state = t.app.snapshot() if hasattr(t.app, "snapshot") else None
        key: dict[str, Any] = {"task": t.task_id, "app": app_state, "calls": sorted(self._calls)}
        if self._answer is not None:
            key["answer"] = self._answer
        info: dict[str, Any] = {
            "task": t.instruction,
            "task_type": t.family,
            "admissible_actions": None,
            "action_valid": valid,
            "won": False,
            "score": 0.0,
            "ground_truth": t.ground_truth,
            "tools": [tool.name for tool in t.tools],
            "state_key": json.dumps(key, sort_keys=True, ensure_ascii=False, separators=(",", ":")),
        }
        if t.goal:
            info["goal"] = copy.deepcopy(t.goal)
        return info

    # ----------------------------------------------------------------- oracle
    def expert_action(self) -> str | None:
        """The next action of the task's known plan (tool calls, then the answer)."""
        if self.task is None or self._answer is not None:
            return None
        plan = self.task.plan
        return plan[min(self._plan_pos, len(plan) - 1)]
