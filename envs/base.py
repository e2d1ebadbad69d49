"""The environment contract: `TextEnv`, task panels, and the `info` keys every env provides.

A `TextEnv` is a Gymnasium env whose observations and actions are strings. Subclasses write four
small methods (`task_ids`, `_reset_task`, `_step`, optionally `render`) and inherit everything the
rest of creditgym relies on: train/valid/test panels with content hashes, seed-or-task-id reset,
step limits, complete `info` dicts, and observations that always fit the observation space.

`info` keys every env provides (filled with defaults when a subclass leaves them out):

- ``task`` (str): the instruction the agent must follow.
- ``admissible_actions`` (list[str] | None): the actions the env would accept now, or None when
  the env cannot enumerate them.
- ``action_valid`` (bool): whether the last action did something (``True`` after reset).
- ``won`` (bool): the task is solved.
- ``state_key`` (str): a canonical key of the TRUE env state (not the observation text, not the
  step counter). Two different states never share a key. Envs that cannot know their state set
  ``state_key_source = "observation"``, and the key falls back to the observation text.
- ``task_type`` (str): for per-type success rates.
- ``score`` (float in [0, 1]): a dense diagnostic of task progress; never used as reward.
- ``task_id`` (str), ``split`` (str), ``panel_hash`` (str), ``step`` (int): bookkeeping.

Optional: ``ground_truth`` (answer text, for IGPO), ``subgoals`` (for HiPER diagnostics),
``error`` (str, set when an episode ended because of an infrastructure failure).

Optional methods, declared here with a default that says "not provided":

- ``expert_action() -> str | None``: the expert's next action from the current state (None when
  the expert has nothing left to do). The default raises `NotImplementedError`; `has_expert()`
  tells without calling it. The oracle agent and the warm start use it.
- ``model() -> TabularModel``: the complete finite model of the current task (exact values for
  the tabular benchmark). The default raises `NotImplementedError`; see `has_model()`.

Each env declares the action syntax its `step` parses (``action_syntax``): ``"action"`` (a
plain command such as ``go north``), ``"search"`` (``<search>..</search>`` / ``<answer>..</answer>``)
or ``"tool"`` (``<tool_call>{json}</tool_call>`` / ``<answer>..</answer>``). Agents map their
output format onto one of these (`creditgym.agents.base.check_format`).

Actions reach `_step` encodable: lone surrogates (e.g. ``"\\udcff"``, what a byte-level
decoder can produce) are replaced by ``"?"`` first, so no engine or bridge (py4j, HTTP) sees a
string it cannot encode.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from creditgym.envs.tabular_model import TabularModel

SPLITS = ("train", "valid", "test")
#: The action syntaxes an env can declare (`TextEnv.action_syntax`).
ACTION_SYNTAXES = ("action", "search", "tool")
#: How a model's reply becomes an action: "strict" takes the parsed text as it is, "admissible" maps
#: it onto the admissible action it names (the LLM agent and the verifiers adapter both offer it).
ACTION_MATCH = ("strict", "admissible")
ActionSyntax = Literal["action", "search", "tool"]

# Printable ASCII, tab and newline, Latin-1 and Latin Extended-A/B, general punctuation and a few
# symbols that real text uses (currency, arrows, box drawing). Anything else is replaced by "?".
_CHARSET = (
    string.printable
    + "".join(chr(c) for c in range(0xA0, 0x250))
    + "".join(chr(c) for c in range(0x2000, 0x2070))
    + "".join(chr(c) for c in range(0x20A0, 0x20C1))
    + "".join(chr(c) for c in range(0x2190, 0x2200))
    + "".join(chr(c) for c in range(0x2500, 0x2580))
)
CHARSET = frozenset(_CHARSET)
_OUTSIDE_CHARSET = re.compile("[^" + re.escape(_CHARSET) + "]")

REQUIRED_INFO_KEYS = (
    "task",
    "admissible_actions",
    "action_valid",
    "won",
    "state_key",
    "task_type",
    "score",
)


def cache_dir(*parts: str) -> Path:
    """The creditgym cache folder (``$CREDITGYM_CACHE`` or ``~/.cache/creditgym``)."""
    root = Path(os.environ.get("CREDITGYM_CACHE", Path.home() / ".cache" / "creditgym"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Panel:
    """A fixed, ordered list of task ids for one split, identified by a content hash.

    The hash covers the env name, split, generator version and every id, so two machines that
    report the same hash evaluated on exactly the same tasks.
    """

    env: str
    split: str
    version: str
    ids: tuple[str, ...]

    @functools.cached_property
    def hash(self) -> str:
        payload = json.dumps([self.env, self.split, self.version, list(self.ids)])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.ids)

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "split": self.split,
            "version": self.version,
            "hash": self.hash,
            "ids": list(self.ids),
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Write the panel to disk (by default under the cache) and return the path."""
        path = (
            Path(path)
            if path
            else cache_dir("panels") / f"{self.env}-{self.split}-{self.hash}.json"
        )
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Panel:
        data = json.loads(Path(path).read_text())
        panel = cls(data["env"], data["split"], data["version"], tuple(data["ids"]))
        if panel.hash != data["hash"]:
            raise ValueError(f"panel file {path} is corrupt: hash {data['hash']} != {panel.hash}")
        return panel


def sanitize_text(text: str, max_length: int) -> str:
    """Make `text` a member of a `spaces.Text(max_length, charset=CHARSET)` space.

    Characters outside the charset become "?"; text longer than the limit is cut and ends with a
    visible marker, so truncation is never silent.
    """
    if _OUTSIDE_CHARSET.search(text) is not None:
        text = _OUTSIDE_CHARSET.sub("?", text)
    if len(text) > max_length:
        marker = " ...[truncated]"
        text = text[: max_length - len(marker)] + marker
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """`text` with every lone surrogate code point replaced by "?" (then it encodes as UTF-8)."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub("?", text)


class TextEnv(gym.Env[str, str]):
    """Base class of every creditgym environment (see the module docstring for `info`).

    Subclasses set the class attributes below and implement:

    - ``task_ids(split) -> Sequence[str]``: the deterministic task list of a split;
    - ``_reset_task(task_id) -> (obs, info)``: start that task (use ``self.np_random`` for any
      randomness, so a seed reproduces an episode);
    - ``_step(action) -> (obs, reward, terminated, info)``: apply any string; never raise for a
      bad action: return a clear observation and ``info["action_valid"] = False``.

    Truncation at ``max_steps``, the panel, default `info` keys and observation sanitising are
    handled here.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}
    #: Registered id (set by `gymnasium.make` through `spec`, or by subclasses for direct use).
    env_name: ClassVar[str] = "creditgym/TextEnv"
    #: Bumped whenever the task generator changes, so panel hashes change with it.
    generator_version: ClassVar[str] = "1"
    #: Prompt-template family for the LLM agent ("generic" works for any env).
    family: ClassVar[str] = "generic"
    #: "state" when `state_key` is the true state, "observation" when it falls back to obs text.
    state_key_source: ClassVar[str] = "state"
    #: The syntax `step` parses: "action" (a plain command), "search" or "tool" (tagged).
    action_syntax: ClassVar[ActionSyntax] = "action"
    #: Extra split names, e.g. {"valid_seen": "valid"}.
    split_aliases: ClassVar[dict[str, str]] = {}
    default_max_steps: ClassVar[int] = 50
    max_observation_length: ClassVar[int] = 32768
    max_action_length: ClassVar[int] = 8192

    def __init__(
        self, split: str = "train", max_steps: int | None = None, render_mode: str | None = None
    ):
        super().__init__()
        split = self.split_aliases.get(split, split)
        if split not in SPLITS:
            valid = sorted(set(SPLITS) | set(self.split_aliases))
            raise ValueError(f"unknown split {split!r}; choose one of {valid}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode {render_mode!r} not supported; choose one of {self.metadata['render_modes']}"
            )
        self.split = split
        self.render_mode = render_mode
        self.max_steps = int(max_steps if max_steps is not None else self.default_max_steps)
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        self.observation_space = spaces.Text(
            max_length=self.max_observation_length, min_length=0, charset=_CHARSET
        )
        self.action_space = spaces.Text(
            max_length=self.max_action_length, min_length=0, charset=_CHARSET
        )
        self._panel: Panel | None = None
        self._steps = 0
        self._last_obs = ""
        self._base_info: dict[str, Any] = {}

    # ----------------------------------------------------------------- subclass API
    def task_ids(self, split: str) -> Sequence[str]:
        raise NotImplementedError

    def _reset_task(self, task_id: str) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        raise NotImplementedError

    # ----------------------------------------------------------------- optional API
    def expert_action(self) -> str | None:
        """The expert's next action from the current state, or None when it has nothing to do.

        Optional: envs with an expert override it; this default raises `NotImplementedError`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no expert: its env class must implement expert_action()"
        )

    def model(self) -> TabularModel:
        """The complete finite model of the current task (a `TabularModel`).

        Optional: envs with a finite, deterministic state space override it; this default raises
        `NotImplementedError`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no finite model: its env class must implement model()"
        )

    @classmethod
    def has_expert(cls) -> bool:
        """Whether this env class implements `expert_action`."""
        return cls.expert_action is not TextEnv.expert_action

    @classmethod
    def has_model(cls) -> bool:
        """Whether this env class implements `model`."""
        return cls.model is not TextEnv.model

    # ----------------------------------------------------------------- panels
    @property
    def panel(self) -> Panel:
        """This env's task panel for its split (built once, then cached on the instance)."""
        if self._panel is None:
            name = self.spec.id if self.spec is not None else self.env_name
            self._panel = Panel(
                name, self.split, self.generator_version, tuple(self.task_ids(self.split))
            )
            if len(self._panel) == 0:
                raise ValueError(f"{name} has no tasks in split {self.split!r}")
        return self._panel

    # ----------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        panel = self.panel
        if "task_id" in options:
            index = options.pop("task_id")
            if not isinstance(index, (int, np.integer)) or not 0 <= index < len(panel):
                raise ValueError(
                    f"options['task_id'] must be an int in [0, {len(panel)}) for split "
                    f"{self.split!r}, got {index!r}"
                )
        else:
            index = int(self.np_random.integers(len(panel)))
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; supported: ['task_id']")
        task_id = panel.ids[int(index)]
        self._steps = 0
        obs, info = self._reset_task(task_id)
        self._base_info = {
            "task_id": task_id,
            "task_index": int(index),
            "split": self.split,
            "panel_hash": panel.hash,
        }
        return self._finish(obs, info, reset=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not isinstance(action, str):
            action = str(action)
        action = encodable(action)
        self._steps += 1
        obs, reward, terminated, info = self._step(action)
        truncated = (not terminated) and self._steps >= self.max_steps
        obs, info = self._finish(obs, info, reset=False)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last_obs
        return None

    # ----------------------------------------------------------------- helpers
    def _finish(self, obs: str, info: dict[str, Any], reset: bool) -> tuple[str, dict[str, Any]]:
        obs = sanitize_text(str(obs), self.max_observation_length)
        info = {**self._base_info, **info}
        info.setdefault("task", "")
        info.setdefault("admissible_actions", None)
        info.setdefault("action_valid", True)
        info.setdefault("won", False)
        info.setdefault("task_type", "default")
        info.setdefault("score", 1.0 if info["won"] else 0.0)
        if "state_key" not in info:
            if self.state_key_source != "observation":
                raise RuntimeError(
                    f"{type(self).__name__} did not set info['state_key']; set it, or declare "
                    "state_key_source = 'observation' to fall back to the observation text"
                )
            info["state_key"] = obs
        info["step"] = self._steps
        self._last_obs = obs
        return obs, info
