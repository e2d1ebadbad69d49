"""Buffers: rewrite a batch's groups before credit (replay), chosen by name.

A buffer has the hooks of a tracker (`creditgym.trainers.trackers.Plugin`): ``before_credit(groups,
ctx)`` returns the rewritten groups (or None to keep them), ``after_credit`` / ``after_update``
see the result. Its whole state is in ``state_dict()`` / ``load_state_dict(state)`` (checkpointed).
``buffer.name`` names one in a config; `available()` lists them, ``make(name, **options)`` builds
one. A buffer with ``group_based = True`` rewrites groups of several trajectories of one task, so
it cannot run with a groupless credit module (``sspo``): the config refuses the pair.

``arpo_replay``: ARPO's per-task replay of successes into all-failing groups (arXiv 2505.16282,
code dvlab-research/ARPO ``replay_buffer.py`` and ``ray_trainer.py`` ``apply_replay``).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from creditgym.credit.returns import DEFAULT_INVALID_PENALTY
from creditgym.credit.trajectory import Trajectory, TrajectoryGroup
from creditgym.trainers.registry import Registry
from creditgym.trainers.trackers import Plugin, task_key

__all__ = ["ARPOOptions", "ARPOReplayBuffer", "Buffer", "available", "make", "register_buffer"]


class Buffer(Plugin):
    """A buffer (module docstring)."""

    kind: ClassVar[str] = "buffer"


_BUFFERS: Registry[type[Buffer]] = Registry("buffer", attr="name")

#: Class decorator: register a `Buffer` under a name (``buffer.name``).
register_buffer = _BUFFERS.register
#: Registered buffers (``buffer.name`` values).
available = _BUFFERS.available


def buffer_class(name: str) -> type[Buffer]:
    """The class registered as ``name`` (an unknown name lists the registered ones)."""
    return _BUFFERS.get(name)


def make(name: str, **options: Any) -> Buffer:
    """Build the buffer registered as ``name`` with ``options``."""
    return _BUFFERS.get(name)(**options)


@dataclass(frozen=True)
class ARPOOptions:
    """Options of `ARPOReplayBuffer` (defaults: the ARPO reference code)."""

    capacity: int = 8
    """Successes kept per task (FIFO; ref ``ReplayBuffer(None, 8)``)."""
    min_return: float | None = None
    """A trajectory enters the buffer when won (None) or when its return exceeds this."""
    std_below: float = 0.05
    """A group is "all negative" when std(R) < std_below ..."""
    mean_below: float = 0.2
    """... and mean(R) < mean_below (ref thresholds on eval_result in [0, 1])."""
    scale: float = 1.0
    """Returns are divided by this before the two thresholds (e.g. 10 for KeyRooms, R_max)."""
    rule: str = "threshold"
    """When a group gets a replay: "threshold" (the ref's std/mean test above) or "all_lost"
    (no trajectory of the group won; independent of the env's reward scale)."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY

    def check(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if self.rule not in ("threshold", "all_lost"):
            raise ValueError(f"rule={self.rule!r} is not valid; choose threshold or all_lost")


@register_buffer("arpo_replay")
class ARPOReplayBuffer(Buffer):
    """Per task, a FIFO of past successes; an all-failing group gets one in place of its first
    trajectory (drawn uniformly, with replacement, by a seeded generator). The buffer then takes
    the successes of the ORIGINAL groups, so a replayed trajectory is never re-added. Group size
    stays G. Replayed trajectories carry ``info["role"] = "replayed"``."""

    group_based: ClassVar[bool] = True

    def __init__(self, seed: int = 0, **options: Any):
        known = {f.name for f in dataclasses.fields(ARPOOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"buffer 'arpo_replay' has no option(s) {unknown}; options: {sorted(known)}"
            )
        self.options = ARPOOptions(**options)
        self.options.check()
        self.seed = int(seed)
        self.draws = 0
        #: task key -> successes, oldest first
        self.store: dict[str, list[Trajectory]] = {}
        self.injected = 0

    def _success(self, t: Trajectory) -> bool:
        if self.options.min_return is None:
            return bool(t.won)
        return t.episode_return(self.options.invalid_penalty) > self.options.min_return

    def _all_negative(self, g: TrajectoryGroup) -> bool:
        o = self.options
        if o.rule == "all_lost":
            return not any(t.won for t in g.trajectories)
        r = np.array([t.episode_return(o.invalid_penalty) for t in g.trajectories]) / o.scale
        sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
        return sd < o.std_below and float(r.mean()) < o.mean_below

    def before_credit(self, groups: list[TrajectoryGroup], ctx: Any) -> list[TrajectoryGroup]:
        out = []
        injected = 0
        for g in groups:
            key = task_key(g)
            stored = self.store.get(key, [])
            if g.trajectories and stored and self._all_negative(g):
                rng = np.random.default_rng([self.seed, self.draws])
                self.draws += 1
                pick = copy.deepcopy(stored[int(rng.integers(len(stored)))])
                pick.info["role"] = "replayed"
                new = copy.copy(g)
                new.trajectories = [pick, *g.trajectories[1:]]
                new._graph = None
                out.append(new)
                injected += 1
            else:
                out.append(g)
            for t in g.trajectories:  # the original group's successes
                if self._success(t):
                    fifo = self.store.setdefault(key, [])
                    fifo.append(copy.deepcopy(t))
                    del fifo[: -self.options.capacity]
        self.injected += injected
        if ctx is not None and hasattr(ctx, "extra"):
            ctx.extra["replayed"] = injected
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything, the stored trajectories as copies (checkpoints pickle them)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "draws": self.draws,
            "injected": self.injected,
            "store": copy.deepcopy(self.store),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self.seed = int(state["seed"])
        self.draws = int(state["draws"])
        self.injected = int(state.get("injected", 0))
        self.store = copy.deepcopy(state["store"])
