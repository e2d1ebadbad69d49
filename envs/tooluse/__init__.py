"""Tool-use env: JSON-schema tools, task families with verifiable outcomes, a Python sandbox."""

from creditgym.envs.tooluse.env import ToolUseEnv, python_tool
from creditgym.envs.tooluse.sandbox import (
    PythonSandbox,
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
    isolation_problem,
)
from creditgym.envs.tooluse.tasks import FAMILIES, Task, make_task
from creditgym.envs.tooluse.tools import Tool, ToolError, check_arguments, parse_tool_call

__all__ = [
    "FAMILIES",
    "PythonSandbox",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "Task",
    "Tool",
    "ToolError",
    "ToolUseEnv",
    "check_arguments",
    "isolation_problem",
    "make_task",
    "parse_tool_call",
    "python_tool",
]
