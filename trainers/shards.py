"""Env shards: k environments of one id behind a batched interface where only data crosses.

A shard holds k envs (SCALE.md section 1: never one env per worker) and answers batched calls
addressed by slot (0..k-1):

- ``reset_many([(slot, task_index, seed)]) -> [SlotResult]``
- ``step_many([(slot, action)]) -> [SlotResult]``
- ``expert_many([slot]) -> [str | None]``: the envs' expert actions (`TextEnv.expert_action`)
- ``snapshot_many([slot]) -> [EnvSnapshot]`` / ``restore_many([(slot, snapshot)]) ->
  [SlotResult]``: env branching (`TextEnv.snapshot` / `restore`; a restore that diverges comes
  back with ``diverged=True``). Backends that cannot branch raise `BranchingNotSupported`
- ``health() -> {"rss_mb", "episodes", "last_step_s", ...}``
- ``close()``

Arguments and results are strings, numbers and small dicts (obs, reward, terminated, truncated,
info), so a shard can live in another process or a Ray actor. What is known about the env
without playing it (family, action syntax, action space, panel, whether it has an expert) is an
`EnvDescription`. An env that raises ends that slot's episode: the result carries ``error`` (the
exception's one-line text) and the shard rebuilds the env before returning.

`EnvPool` puts several shards behind one object with global slots (slot ``i`` of the pool is a
slot of one shard; shards hold ``envs_per_shard`` envs each), and is what rollout strategies
talk to. Backends are chosen by name (``rollout.env_backend``): `available()` lists them and
`make_shard(name, ...)` builds one. Today's is ``inprocess`` (the envs live in this process);
``process`` and ``ray`` belong to the rollouts-at-scale issue and register the same way.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium

from creditgym.envs.base import Panel, TextEnv
from creditgym.envs.branching import BranchDivergence, BranchingUnsupported, EnvSnapshot
from creditgym.trainers.registry import Registry

__all__ = [
    "BranchingNotSupported",
    "EnvDescription",
    "EnvPool",
    "EnvShard",
    "InProcessShard",
    "SlotResult",
    "available",
    "make_shard",
    "register_shard",
]


class BranchingNotSupported(NotImplementedError):
    """Raised by `snapshot_many` / `restore_many` on backends that cannot branch yet."""


@dataclass(frozen=True)
class EnvDescription:
    """What is known about a shard's env without playing it (plain data)."""

    env_id: str
    split: str
    #: Prompt-template family (`TextEnv.family`).
    family: str
    #: The syntax the env's `step` parses (`TextEnv.action_syntax`).
    action_syntax: str
    max_steps: int
    #: The action space as data: ``{"min_length", "max_length", "charset"}``.
    action_space: dict[str, Any]
    has_expert: bool
    has_model: bool
    panel: Panel

    @classmethod
    def of(cls, env_id: str, env: TextEnv) -> EnvDescription:
        space = env.action_space
        return cls(
            env_id=env_id,
            split=env.split,
            family=env.family,
            action_syntax=env.action_syntax,
            max_steps=int(env.max_steps),
            action_space={
                "min_length": int(space.min_length),
                "max_length": int(space.max_length),
                # in the space's own order (`characters` is sorted), so samples match the env's
                "charset": "".join(space.character_list),
            },
            has_expert=type(env).has_expert(),
            has_model=type(env).has_model(),
            panel=env.panel,
        )


@dataclass
class SlotResult:
    """The outcome of one reset or step of one slot."""

    obs: str = ""
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    #: Set when the env raised (the exception's one-line text); the env has been rebuilt.
    error: str | None = None
    #: True when rebuilding the env after that error failed as well.
    restart_failed: bool = False
    #: True when a restore did not reach the snapshot's state (`BranchDivergence`; `error` holds
    #: its text). The env was not rebuilt: the branch is dropped, the env is reset before reuse.
    diverged: bool = False


def _one_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _rss_mb() -> float:
    """Resident memory of this process in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class EnvShard(ABC):
    """k envs of one id and split, addressed by slot; the interface every backend implements."""

    #: Registry name of the backend.
    backend: ClassVar[str] = ""

    def __init__(self, env_id: str, size: int, split: str, env_kwargs: dict[str, Any]):
        if size < 1:
            raise ValueError(f"a shard needs at least one env, got size={size}")
        self.env_id = env_id
        self.size = int(size)
        self.split = split
        self.env_kwargs = dict(env_kwargs)
        #: Envs rebuilt after a failure (successful rebuilds only).
        self.restarts = 0

    @property
    @abstractmethod
    def description(self) -> EnvDescription: ...

    @abstractmethod
    def reset_many(self, calls: Sequence[tuple[int, int, int]]) -> list[SlotResult]:
        """Reset each ``(slot, task_index, seed)``: task `task_index` of the panel, that seed."""

    @abstractmethod
    def step_many(self, calls: Sequence[tuple[int, str]]) -> list[SlotResult]:
        """Step each ``(slot, action)``."""

    @abstractmethod
    def expert_many(self, slots: Sequence[int]) -> list[str | None]:
        """The expert action of each slot's env in its current state."""

    def snapshot_many(self, slots: Sequence[int]) -> list[Any]:
        raise BranchingNotSupported(
            f"the {self.backend!r} env backend cannot snapshot envs: not supported until env "
            "branching lands"
        )

    def restore_many(self, calls: Sequence[tuple[int, Any]]) -> list[SlotResult]:
        raise BranchingNotSupported(
            f"the {self.backend!r} env backend cannot restore envs: not supported until env "
            "branching lands"
        )

    @abstractmethod
    def health(self) -> dict[str, Any]:
        """``{"rss_mb", "episodes", "last_step_s", "restarts", "pid"}`` of this shard."""

    @abstractmethod
    def close(self) -> None: ...


_SHARDS: Registry[type[EnvShard]] = Registry("env backend", attr="backend")

#: Class decorator: register an `EnvShard` backend under a name (``rollout.env_backend``).
register_shard = _SHARDS.register
#: Registered env backends (``rollout.env_backend`` values).
available = _SHARDS.available


def make_shard(
    name: str,
    env_id: str,
    size: int,
    split: str = "train",
    env_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> EnvShard:
    """Build a shard of backend `name` holding `size` envs."""
    cls = _SHARDS.get(name)
    return cls(env_id, size, split, dict(env_kwargs or {}), **options)


#: The registry's `make`, under the name every seam module uses.
make = make_shard


@register_shard("inprocess")
class InProcessShard(EnvShard):
    """The envs live in this process and run one after another (the default backend)."""

    def __init__(self, env_id: str, size: int, split: str, env_kwargs: dict[str, Any]):
        super().__init__(env_id, size, split, env_kwargs)
        self._envs: list[TextEnv] = [self._make() for _ in range(self.size)]
        self._description = EnvDescription.of(env_id, self._envs[0])
        self._episodes = 0
        self._last_step_s = 0.0

    def _make(self) -> TextEnv:
        env = gymnasium.make(self.env_id, split=self.split, **self.env_kwargs).unwrapped
        if not isinstance(env, TextEnv):
            raise TypeError(f"{self.env_id} is not a creditgym TextEnv (got {type(env).__name__})")
        return env

    @property
    def description(self) -> EnvDescription:
        return self._description

    def _restart(self, slot: int, result: SlotResult) -> None:
        with contextlib.suppress(Exception):
            self._envs[slot].close()
        try:
            self._envs[slot] = self._make()
        except Exception:
            result.restart_failed = True
        else:
            self.restarts += 1

    def reset_many(self, calls: Sequence[tuple[int, int, int]]) -> list[SlotResult]:
        out = []
        for slot, task, seed in calls:
            result = SlotResult()
            try:
                result.obs, result.info = self._envs[slot].reset(
                    seed=int(seed), options={"task_id": int(task)}
                )
            except Exception as exc:
                result.error = _one_line(exc)
                self._restart(slot, result)
            self._episodes += 1
            out.append(result)
        return out

    def step_many(self, calls: Sequence[tuple[int, str]]) -> list[SlotResult]:
        t0 = time.perf_counter()
        out = []
        for slot, action in calls:
            try:
                obs, reward, terminated, truncated, info = self._envs[slot].step(action)
            except Exception as exc:
                result = SlotResult(error=_one_line(exc))
                self._restart(slot, result)
            else:
                result = SlotResult(obs, reward, terminated, truncated, info)
            out.append(result)
        self._last_step_s = time.perf_counter() - t0
        return out

    def expert_many(self, slots: Sequence[int]) -> list[str | None]:
        return [self._envs[slot].expert_action() for slot in slots]

    def snapshot_many(self, slots: Sequence[int]) -> list[EnvSnapshot]:
        """Each slot's `TextEnv.snapshot()` (plain data; raises for an env that cannot branch)."""
        return [self._envs[slot].snapshot() for slot in slots]

    def restore_many(self, calls: Sequence[tuple[int, EnvSnapshot]]) -> list[SlotResult]:
        """`TextEnv.restore` each ``(slot, snapshot)``: the restored obs and info, reward 0.

        A `BranchDivergence` comes back as ``diverged=True`` with its text in ``error``; any
        other exception as ``error`` with the env rebuilt, as in `step_many`.
        """
        t0 = time.perf_counter()
        out = []
        for slot, snap in calls:
            result = SlotResult()
            try:
                result.obs, result.info = self._envs[slot].restore(snap)
            except BranchDivergence as exc:
                result.error, result.diverged = _one_line(exc), True
            except BranchingUnsupported:
                raise
            except Exception as exc:
                result.error = _one_line(exc)
                self._restart(slot, result)
            out.append(result)
        self._last_step_s = time.perf_counter() - t0
        return out

    def health(self) -> dict[str, Any]:
        return {
            "rss_mb": _rss_mb(),
            "episodes": self._episodes,
            "last_step_s": self._last_step_s,
            "restarts": self.restarts,
            "pid": os.getpid(),
        }

    def close(self) -> None:
        for env in self._envs:
            with contextlib.suppress(Exception):
                env.close()
        self._envs = []


class EnvPool:
    """Shards of one env id and split behind one object, addressed by global slot.

    ``EnvPool(env_id, size)`` holds `size` envs in shards of ``envs_per_shard`` (the last one
    may be smaller); `ensure` adds shards. Its methods are the shard interface with global slots.
    """

    def __init__(
        self,
        env_id: str,
        size: int,
        split: str = "train",
        env_kwargs: dict[str, Any] | None = None,
        *,
        backend: str = "inprocess",
        envs_per_shard: int = 8,
        **backend_options: Any,
    ):
        if size < 1:
            raise ValueError(f"EnvPool size must be >= 1, got {size}")
        if envs_per_shard < 1:
            raise ValueError(f"envs_per_shard must be >= 1, got {envs_per_shard}")
        if backend not in _SHARDS:
            raise ValueError(f"unknown env backend {backend!r}; registered: {available()}")
        self.env_id = env_id
        self.split = split
        self.env_kwargs = dict(env_kwargs or {})
        self.backend = backend
        self.envs_per_shard = int(envs_per_shard)
        self.backend_options = backend_options
        self.shards: list[EnvShard] = []
        #: Global slot -> (shard index, slot in that shard).
        self._where: list[tuple[int, int]] = []
        self.ensure(size)

    # ------------------------------------------------------------------ layout
    @property
    def size(self) -> int:
        return len(self._where)

    def ensure(self, size: int) -> None:
        """Hold at least `size` envs (new shards of up to ``envs_per_shard`` envs)."""
        while self.size < size:
            k = min(self.envs_per_shard, size - self.size)
            shard = make_shard(
                self.backend, self.env_id, k, self.split, self.env_kwargs, **self.backend_options
            )
            index = len(self.shards)
            self.shards.append(shard)
            self._where.extend((index, j) for j in range(k))

    @property
    def description(self) -> EnvDescription:
        return self.shards[0].description

    @property
    def panel(self) -> Panel:
        return self.description.panel

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self.shards)

    def _route(self, slots: Sequence[int]) -> dict[int, list[int]]:
        """Shard index -> positions in `slots` of that shard's calls (in call order)."""
        by_shard: dict[int, list[int]] = {}
        for pos, slot in enumerate(slots):
            if not 0 <= slot < self.size:
                raise IndexError(f"slot {slot} is outside this pool of {self.size} envs")
            by_shard.setdefault(self._where[slot][0], []).append(pos)
        return by_shard

    def _scatter(self, method: str, slots: Sequence[int], rest: Sequence[tuple] | None) -> list:
        """Call `method` on each shard with its share of the calls; results in call order.

        ``rest[i]`` holds the arguments after the slot of call i (None: the calls are bare slots).
        """
        slots = [int(s) for s in slots]
        out: list[Any] = [None] * len(slots)
        for shard_index, positions in self._route(slots).items():
            local: list[Any] = []
            for pos in positions:
                local_slot = self._where[slots[pos]][1]
                local.append(local_slot if rest is None else (local_slot, *rest[pos]))
            results = getattr(self.shards[shard_index], method)(local)
            for pos, result in zip(positions, results):
                out[pos] = result
        return out

    # ------------------------------------------------------------------ shard interface
    def reset_many(self, calls: Sequence[tuple[int, int, int]]) -> list[SlotResult]:
        return self._scatter("reset_many", [c[0] for c in calls], [tuple(c[1:]) for c in calls])

    def step_many(self, calls: Sequence[tuple[int, str]]) -> list[SlotResult]:
        return self._scatter("step_many", [c[0] for c in calls], [tuple(c[1:]) for c in calls])

    def expert_many(self, slots: Sequence[int]) -> list[str | None]:
        return self._scatter("expert_many", slots, None)

    def snapshot_many(self, slots: Sequence[int]) -> list[Any]:
        return self._scatter("snapshot_many", slots, None)

    def restore_many(self, calls: Sequence[tuple[int, Any]]) -> list[SlotResult]:
        return self._scatter("restore_many", [c[0] for c in calls], [tuple(c[1:]) for c in calls])

    def health(self) -> dict[str, Any]:
        """Totals over the shards (RSS summed over distinct processes) and each shard's own."""
        shards = [s.health() for s in self.shards]
        rss_by_pid = {h["pid"]: h["rss_mb"] for h in shards}
        return {
            "rss_mb": sum(rss_by_pid.values()),
            "episodes": sum(h["episodes"] for h in shards),
            "last_step_s": max(h["last_step_s"] for h in shards),
            "restarts": sum(h["restarts"] for h in shards),
            "shards": shards,
        }

    def close(self) -> None:
        for shard in self.shards:
            with contextlib.suppress(Exception):
                shard.close()
        self.shards = []
        self._where = []

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
