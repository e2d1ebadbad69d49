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

Branching (`creditgym.envs.branching`): ``snapshot() -> EnvSnapshot`` names the current state
(task, seed, actions since reset, state key) and ``restore(snap) -> (obs, info)`` returns an env
to it, by replay (the default) or from a native copy of the state (``branching = "snapshot"``:
subclasses implement ``_snapshot_state`` / ``_restore_state``). ``branching = "none"`` declares
an env that cannot branch. A restore that does not reach the recorded state key raises
`BranchDivergence`.

Actions reach `_step` encodable: lone surrogates (e.g. ``"\\udcff"``, what a byte-level
decoder can produce) are replaced by ``"?"`` first, so no engine or bridge (py4j, HTTP) sees a
string it cannot encode.
"""

from __future__ import annotations

import copy
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

from creditgym.envs.branching import (
    BranchDivergence,
    Branching,
    BranchingUnsupported,
    EnvSnapshot,
)

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
    #: How `restore` reaches a snapshot's state: "replay" (reset, then the recorded actions),
    #: "snapshot" (a native copy of the state where `_snapshot_state` gives one, else replay),
    #: or "none" (the env cannot branch).
    branching: ClassVar[Branching] = "replay"
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
        # The path from the last reset, for `snapshot`: (seed, np_random state if unseeded),
        # the actions the env received, and the state key after the reset and each action.
        self._trace_seed: tuple[int | None, dict[str, Any] | None] | None = None
        self._trace_actions: list[str] = []
        self._trace_keys: list[str | None] = []
        self._last_info: dict[str, Any] = {}

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
        rng = None if seed is not None else copy.deepcopy(self.np_random.bit_generator.state)
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
        obs, info = self._finish(obs, info, reset=True)
        self._trace_seed = (None if seed is None else int(seed), rng)
        self._trace_actions = []
        self._trace_keys = [info["state_key"]]
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not isinstance(action, str):
            action = str(action)
        action = encodable(action)
        self._steps += 1
        obs, reward, terminated, info = self._step(action)
        truncated = (not terminated) and self._steps >= self.max_steps
        obs, info = self._finish(obs, info, reset=False)
        self._trace_actions.append(action)
        self._trace_keys.append(info["state_key"])
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
        self._last_info = info
        return obs, info

    # ----------------------------------------------------------------- branching
    def _branch_name(self) -> str:
        return self.spec.id if self.spec is not None else self.env_name

    def _require_branching(self, what: str) -> None:
        if self.branching == "none":
            raise BranchingUnsupported(
                f"{self._branch_name()} cannot {what}: its env class sets branching = 'none'"
            )

    def _snapshot_state(self) -> Any:
        """A native copy of the current state, or None to restore by replay (the default).

        Envs with ``branching = "snapshot"`` override this and `_restore_state`. The copy must
        be plain data that any instance of this env (same id and kwargs) can restore.
        """
        return None

    def _restore_state(self, task_id: str, state: Any) -> str | None:
        """Set the current episode to task `task_id` in `state` (from `_snapshot_state`).

        Returns the state key of the restored state, or None when this instance cannot restore
        natively (then `restore` replays). Only called for envs that snapshot.
        """
        raise NotImplementedError(f"{type(self).__name__} has no native snapshots")

    def snapshot(self) -> EnvSnapshot:
        """The current state as an `EnvSnapshot` (plain, picklable data) for `restore`."""
        self._require_branching("snapshot")
        if self._trace_seed is None:
            raise RuntimeError("call reset() before snapshot()")
        payload = None
        if self.branching == "snapshot":
            state = self._snapshot_state()
            if state is not None:
                payload = {
                    "state": state,
                    "obs": self._last_obs,
                    "info": copy.deepcopy(self._last_info),
                }
        seed, rng = self._trace_seed
        return EnvSnapshot(
            env_id=self._branch_name(),
            split=self.split,
            task_id=str(self._base_info["task_id"]),
            task_index=int(self._base_info["task_index"]),
            seed=seed,
            actions=tuple(self._trace_actions),
            state_key=self._trace_keys[-1],
            keys=() if None in self._trace_keys else tuple(self._trace_keys),
            rng=copy.deepcopy(rng),
            payload=payload,
        )

    def restore(self, snap: EnvSnapshot) -> tuple[str, dict[str, Any]]:
        """Bring this env to the state of `snap`; returns the (obs, info) the env gave there.

        Native snapshots (a payload on an env with ``branching = "snapshot"``) are set directly;
        anything else is replayed: reset with the snapshot's task and seed, then each action,
        checking every recorded state key. Raises `BranchDivergence` when a key differs or the
        episode ends before the last action.
        """
        self._require_branching("restore")
        if not isinstance(snap, EnvSnapshot):
            raise TypeError(f"restore() takes an EnvSnapshot, got {type(snap).__name__}")
        name = self._branch_name()
        if snap.env_id != name or snap.split != self.split:
            raise ValueError(
                f"snapshot of {snap.env_id} ({snap.split}) cannot restore {name} ({self.split})"
            )
        panel = self.panel
        if not 0 <= snap.task_index < len(panel) or panel.ids[snap.task_index] != snap.task_id:
            raise ValueError(
                f"snapshot task {snap.task_id!r} (index {snap.task_index}) is not in this env's "
                f"{self.split} panel (hash {panel.hash}): made with other env kwargs?"
            )
        if snap.payload is not None and self.branching == "snapshot":
            return self._restore_native(snap)
        return self._replay(snap)

    def _restore_native(self, snap: EnvSnapshot) -> tuple[str, dict[str, Any]]:
        key = self._restore_state(snap.task_id, snap.payload["state"])
        if key is None:
            return self._replay(snap)
        if key != snap.state_key:
            raise BranchDivergence(
                self._branch_name(), snap.task_id, snap.step, snap.state_key, key
            )
        self._steps = snap.step
        self._base_info = {
            "task_id": snap.task_id,
            "task_index": snap.task_index,
            "split": self.split,
            "panel_hash": self.panel.hash,
        }
        self._trace_seed = (snap.seed, copy.deepcopy(snap.rng))
        self._trace_actions = list(snap.actions)
        # (a snapshot without intermediate keys leaves them unknown: None, never checked)
        self._trace_keys = list(snap.keys) if snap.keys else [None] * snap.step + [key]
        self._last_obs = snap.payload["obs"]
        self._last_info = copy.deepcopy(snap.payload["info"])
        return self._last_obs, copy.deepcopy(self._last_info)

    def _replay(self, snap: EnvSnapshot) -> tuple[str, dict[str, Any]]:
        name = self._branch_name()
        if snap.seed is None and snap.rng is not None:
            self.np_random.bit_generator.state = copy.deepcopy(snap.rng)
        obs, info = self.reset(seed=snap.seed, options={"task_id": snap.task_index})
        keys = snap.keys
        for i, action in enumerate(snap.actions):
            if keys and info["state_key"] != keys[i]:
                raise BranchDivergence(name, snap.task_id, i, keys[i], info["state_key"])
            obs, _, terminated, truncated, info = self.step(action)
            if info.get("error"):
                raise RuntimeError(f"{name} failed while replaying step {i + 1}: {info['error']}")
            if (terminated or truncated) and i + 1 < len(snap.actions):
                raise BranchDivergence(
                    name, snap.task_id, i + 1, snap.state_key, info["state_key"],
                    why="the episode ended before the last recorded action",
                )  # fmt: skip
        if info["state_key"] != snap.state_key:
            raise BranchDivergence(name, snap.task_id, snap.step, snap.state_key, info["state_key"])
        return obs, info
