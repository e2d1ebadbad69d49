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
talk to. Its calls are thread-safe; besides the batched ones it has non-blocking per-slot calls
(``submit_reset`` / ``submit_step`` / ``submit_expert`` -> `concurrent.futures.Future`) for
asynchronous rollouts, and `EnvPool.take_counters` (restarts, timeouts, recycles, lost episodes
since the last take) for the per-iteration metrics.

Backends are chosen by name (``rollout.env_backend``): `available()` lists them and
`make_shard(name, ...)` builds one:

- ``inprocess`` (default): the envs live in this process and run one after another;
- ``process``: each shard is a spawned worker process (`creditgym.trainers.shard_process`);
- ``ray``: each shard is a threaded Ray actor (`creditgym.trainers.shard_ray`).

On the two remote backends the k envs of a shard step concurrently (one thread each), a call
that exceeds ``step_timeout_s`` kills the shard, and a dead shard is rebuilt
(`creditgym.trainers.shard_remote`): faults end episodes (``SlotResult.error``), never training.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium

from creditgym.envs.base import Panel, TextEnv
from creditgym.envs.branching import BranchDivergence, BranchingUnsupported, EnvSnapshot
from creditgym.trainers.registry import Registry

__all__ = [
    "COUNTERS",
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


#: Fault counters every shard keeps (`EnvShard.take_counters`; logged as ``rollout/<name>``).
COUNTERS = (
    "env_restarts",  # an env raised and was rebuilt inside its shard
    "shard_restarts",  # a dead, killed or recycled shard was rebuilt
    "shard_timeouts",  # a call exceeded step_timeout_s and its shard was killed
    "shard_recycles",  # a shard was rebuilt because of recycle_episodes / recycle_rss_mb
    "shard_rebuild_failures",  # a rebuild attempt failed
    "shard_lost_episodes",  # running episodes ended because their shard died
)

#: Fault-handling options every backend accepts (``rollout.*`` keys; see `EnvPool`).
FAULT_OPTIONS = (
    "step_timeout_s",
    "recycle_episodes",
    "recycle_rss_mb",
    "max_failed_rebuilds",
    "rebuild_timeout_s",
)


def _done_future(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


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
        #: Fault counts since the last `take_counters` (keys: `COUNTERS`).
        self.counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to fault counter `name` (thread-safe)."""
        with self._counter_lock:
            self.counters[name] += n

    def take_counters(self) -> dict[str, int]:
        """The fault counts since the previous call (every name of `COUNTERS`), then zero."""
        with self._counter_lock:
            out = {name: int(self.counters[name]) for name in COUNTERS}
            self.counters.clear()
        return out

    def submit_many(self, method: str, calls: Sequence[Any]) -> list[Future]:
        """Start `method` (``"reset_many"``, ``"step_many"``, ...) on `calls`; one future each.

        This default runs the batched method in the calling thread and returns done futures (an
        exception it raises is set on every one of them). Remote backends return at once, and
        their futures resolve as each call's result arrives.
        """
        try:
            results = getattr(self, method)(list(calls))
        except Exception as exc:
            failed: list[Future] = [Future() for _ in calls]
            for fut in failed:
                fut.set_exception(exc)
            return failed
        return [_done_future(r) for r in results]

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


# The remote backends ("process", "ray", both on the shard_remote client) register from their
# own modules; importing them starts nothing and does not import Ray.
_SHARDS: Registry[type[EnvShard]] = Registry(
    "env backend",
    attr="backend",
    builtins=("creditgym.trainers.shard_process", "creditgym.trainers.shard_ray"),
)

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


def _check_options(backend: str, options: dict[str, Any], extra: Sequence[str] = ()) -> None:
    unknown = sorted(set(options) - set(FAULT_OPTIONS) - set(extra))
    if unknown:
        known = sorted({*FAULT_OPTIONS, *extra, "step_latency_s"})
        raise TypeError(
            f"the {backend!r} env backend got unknown options {unknown} (known: {known})"
        )


@register_shard("inprocess")
class InProcessShard(EnvShard):
    """The envs live in this process and run one after another (the default backend).

    It cannot time out or kill itself, so it ignores the fault options (`FAULT_OPTIONS`): those
    apply to the remote backends. ``step_latency_s`` adds an artificial sleep after every env
    step (benchmarks of env concurrency; label any figure measured with it).
    """

    def __init__(
        self,
        env_id: str,
        size: int,
        split: str,
        env_kwargs: dict[str, Any],
        step_latency_s: float = 0.0,
        **options: Any,
    ):
        _check_options(self.backend or "inprocess", options)
        super().__init__(env_id, size, split, env_kwargs)
        if step_latency_s < 0:
            raise ValueError(f"step_latency_s must be >= 0, got {step_latency_s}")
        self.step_latency_s = float(step_latency_s)
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
            with self._counter_lock:
                self.restarts += 1
                self.counters["env_restarts"] += 1

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
            with self._counter_lock:
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
            if self.step_latency_s:
                time.sleep(self.step_latency_s)
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
    may be smaller); `ensure` adds shards. Its methods are the shard interface with global slots,
    and every one is thread-safe. The batched calls send each shard its share at once, so remote
    shards work concurrently; ``submit_*`` start one slot's call and return a future. An env or
    shard fault never raises from a step or reset: its `SlotResult` carries ``error``. Only
    `creditgym.trainers.shard_remote.ShardRebuildError` (a shard that cannot be rebuilt) ends
    the run.

    ``backend_options`` go to every shard: ``step_timeout_s``, ``recycle_episodes``,
    ``recycle_rss_mb``, ``max_failed_rebuilds``, ``rebuild_timeout_s`` (`FAULT_OPTIONS`; the
    remote backends apply them), ``step_latency_s`` (artificial), and backend-specific ones.
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
        self._layout_lock = threading.Lock()
        #: Counts of shards already closed (kept for the next `take_counters`).
        self._closed_counts: Counter[str] = Counter()
        try:
            self.ensure(size)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ layout
    @property
    def size(self) -> int:
        return len(self._where)

    def ensure(self, size: int) -> None:
        """Hold at least `size` envs (new shards of up to ``envs_per_shard`` envs)."""
        with self._layout_lock:
            while self.size < size:
                k = min(self.envs_per_shard, size - self.size)
                shard = make_shard(
                    self.backend,
                    self.env_id,
                    k,
                    self.split,
                    self.env_kwargs,
                    **self.backend_options,
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

    def _locate(self, slot: int) -> tuple[int, int]:
        if not 0 <= slot < self.size:
            raise IndexError(f"slot {slot} is outside this pool of {self.size} envs")
        return self._where[slot]

    def _scatter(self, method: str, slots: Sequence[int], rest: Sequence[tuple] | None) -> list:
        """Call `method` on each shard with its share of the calls; results in call order.

        Every shard gets its share before any result is awaited, so remote shards overlap.
        ``rest[i]`` holds the arguments after the slot of call i (None: the calls are bare slots).
        """
        slots = [int(s) for s in slots]
        futures: list[tuple[list[int], list[Future]]] = []
        for shard_index, positions in self._route(slots).items():
            local: list[Any] = []
            for pos in positions:
                local_slot = self._where[slots[pos]][1]
                local.append(local_slot if rest is None else (local_slot, *rest[pos]))
            futures.append((positions, self.shards[shard_index].submit_many(method, local)))
        out: list[Any] = [None] * len(slots)
        for positions, futs in futures:
            for pos, fut in zip(positions, futs):
                out[pos] = fut.result()
        return out

    def _submit(self, method: str, slot: int, *args: Any) -> Future:
        shard_index, local = self._locate(int(slot))
        call = (local, *args) if args else local
        return self.shards[shard_index].submit_many(method, [call])[0]

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

    # ------------------------------------------------------------------ per-slot, non-blocking
    def submit_reset(self, slot: int, task_index: int, seed: int) -> Future:
        """Start resetting `slot` to task `task_index` with `seed`; a future of its `SlotResult`.

        One call per slot may be in flight (a second raises RuntimeError on remote backends).
        On ``inprocess`` the call runs here and the future is already done.
        """
        return self._submit("reset_many", slot, int(task_index), int(seed))

    def submit_step(self, slot: int, action: str) -> Future:
        """Start stepping `slot` with `action`; a future of its `SlotResult` (see `submit_reset`)."""
        return self._submit("step_many", slot, action)

    def submit_expert(self, slot: int) -> Future:
        """Start asking `slot`'s env for its expert action; a future of ``str | None``."""
        return self._submit("expert_many", slot)

    def take_counters(self) -> dict[str, int]:
        """Fault counts over all shards since the previous call (every name of `COUNTERS`)."""
        total: Counter[str] = Counter(self._closed_counts)
        self._closed_counts.clear()
        for shard in list(self.shards):
            total.update(shard.take_counters())
        return {name: int(total[name]) for name in COUNTERS}

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
        """Close every shard (remote ones: stop and reap their workers). Idempotent."""
        with self._layout_lock:
            shards, self.shards, self._where = self.shards, [], []
        for shard in shards:
            with contextlib.suppress(Exception):
                shard.close()
            self._closed_counts.update(shard.take_counters())

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
