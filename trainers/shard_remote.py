"""What the remote env backends share: the worker-side shard and the client with fault handling.

A remote shard is a worker (a spawned process, `creditgym.trainers.shard_process`, or a Ray
actor, `creditgym.trainers.shard_ray`) that holds a `ServedShard`: an `InProcessShard` whose k
envs are called from k threads, so envs that wait (a browser, a server, an artificial latency)
overlap. The client, `RemoteShard`, sends each slot's call on its own and turns every fault into
data:

- a call that has not returned after ``step_timeout_s`` kills the worker;
- a worker that dies (crash, kill, lost node) ends the episodes running on it: calls in flight
  resolve to a `SlotResult` with ``error``; a slot whose episode was running but idle gets that
  error on its next step (``"episode lost: ..."``), and is fine again after a reset;
- the next call rebuilds the worker; ``max_failed_rebuilds`` failed attempts in a row raise
  `ShardRebuildError`, the one fault that stops a run;
- a shard is recycled (rebuilt on purpose) after ``recycle_episodes`` resets or when its
  worker's RSS is above ``recycle_rss_mb``, at a reset that finds none of its episodes running.

The worker also refuses to step a slot it has not reset itself, so a worker restarted behind the
client's back (Ray restarts dead actors) never plays on from a fresh env.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from creditgym.trainers.shards import (
    EnvDescription,
    EnvShard,
    InProcessShard,
    SlotResult,
    _check_options,
    _one_line,
)

__all__ = ["RemoteShard", "ServedShard", "ShardRebuildError", "WorkerLost"]

#: Methods that take ``(slot, ...)`` tuples; the others take bare slots.
_TUPLE_CALLS = {"reset_many", "step_many", "restore_many"}
#: Methods that need a running episode on the slot.
_NEEDS_EPISODE = {"step_many", "expert_many", "snapshot_many"}


class ShardRebuildError(RuntimeError):
    """A shard's worker could not be rebuilt ``max_failed_rebuilds`` times in a row."""


class WorkerLost(RuntimeError):
    """The worker of a remote shard is gone (crashed, killed, timed out or its node was lost)."""


class ServedShard:
    """The worker side of a remote shard: an `InProcessShard` called one slot per thread.

    `call` is thread-safe for calls on different slots. A step, expert or snapshot call on a slot
    this worker has not reset (it was restarted since) comes back as an error result.
    """

    def __init__(
        self,
        env_id: str,
        size: int,
        split: str,
        env_kwargs: dict[str, Any],
        step_latency_s: float = 0.0,
    ):
        import creditgym.envs  # noqa: F401  (registers the built-in envs in this worker)

        self.inner = InProcessShard(env_id, size, split, env_kwargs, step_latency_s=step_latency_s)
        self._started = [False] * size
        # An env class with ``thread_safe = False`` (shared engine state, e.g. ALFWorld's
        # TextWorld engine) gets its calls one at a time; the shard's process still runs in
        # parallel with the others.
        env_class = type(self.inner._envs[0])
        self._serial = None if getattr(env_class, "thread_safe", True) else threading.Lock()

    @property
    def description(self) -> EnvDescription:
        return self.inner.description

    def call(self, method: str, calls: Sequence[Any]) -> Any:
        if method == "health":
            return self.inner.health()
        if method == "take_counters":
            return self.inner.take_counters()
        if method not in _TUPLE_CALLS and method not in _NEEDS_EPISODE:
            raise ValueError(f"a shard has no method {method!r}")
        lost = "episode lost: the env worker was restarted; reset the slot"
        if method in _NEEDS_EPISODE:
            slots = [c[0] if method in _TUPLE_CALLS else c for c in calls]
            if not all(self._started[s] for s in slots):
                if method == "step_many":
                    return [SlotResult(error=lost) for _ in calls]
                if method == "expert_many":
                    return [None for _ in calls]
                raise WorkerLost(lost)
        if self._serial is not None:
            with self._serial:
                out = getattr(self.inner, method)(list(calls))
        else:
            out = getattr(self.inner, method)(list(calls))
        if method in ("reset_many", "restore_many"):
            for c, r in zip(calls, out):
                self._started[c[0]] = r.error is None
        return out

    def close(self) -> None:
        self.inner.close()


@dataclass
class _Call:
    method: str
    slot: int
    generation: int
    deadline: float
    future: Future


def _lost_result(method: str, reason: str) -> Any:
    """What a call on a dead worker resolves to (a snapshot has no result that says so)."""
    if method in ("step_many", "reset_many", "restore_many"):
        return SlotResult(error=reason)
    if method == "expert_many":
        return None
    return WorkerLost(reason)


class RemoteShard(EnvShard):
    """Client of a shard whose envs live in a worker: per-slot calls, timeouts and rebuilds.

    Subclasses start, call and kill the worker (`_spawn`, `_send`, `_kill`, `_is_death`).
    """

    #: Options of the subclass besides `FAULT_OPTIONS` and ``step_latency_s``.
    extra_options: tuple[str, ...] = ()

    def __init__(
        self,
        env_id: str,
        size: int,
        split: str,
        env_kwargs: dict[str, Any],
        *,
        step_timeout_s: float | None = None,
        recycle_episodes: int | None = None,
        recycle_rss_mb: float | None = None,
        max_failed_rebuilds: int = 3,
        rebuild_timeout_s: float = 120.0,
        step_latency_s: float = 0.0,
        **options: Any,
    ):
        _check_options(self.backend, options, self.extra_options)
        super().__init__(env_id, size, split, env_kwargs)
        for name, value in (
            ("step_timeout_s", step_timeout_s),
            ("recycle_episodes", recycle_episodes),
            ("recycle_rss_mb", recycle_rss_mb),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        if max_failed_rebuilds < 1:
            raise ValueError(f"max_failed_rebuilds must be >= 1, got {max_failed_rebuilds}")
        self.step_timeout_s = step_timeout_s
        self.recycle_episodes = recycle_episodes
        self.recycle_rss_mb = recycle_rss_mb
        self.max_failed_rebuilds = int(max_failed_rebuilds)
        self.rebuild_timeout_s = float(rebuild_timeout_s)
        self.step_latency_s = float(step_latency_s)
        self.options = options
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._ids = itertools.count()
        self._pending: dict[int, _Call] = {}
        self._busy = [False] * self.size
        self._running = [False] * self.size
        self._lost: list[str | None] = [None] * self.size
        self._generation = 0
        self._alive = False
        self._closed = False
        self._episodes = 0
        self._failed_rebuilds = 0
        self._description: EnvDescription | None = None
        self._start_worker(first=True)
        self._watchdog: threading.Thread | None = None
        if step_timeout_s is not None:
            self._watchdog = threading.Thread(
                target=self._watch, name=f"shard-watchdog-{env_id}", daemon=True
            )
            self._watchdog.start()

    # ------------------------------------------------------------------ transport (subclasses)
    @abstractmethod
    def _spawn(self) -> EnvDescription:
        """Start a worker holding a `ServedShard`; block until it is ready (at most
        ``rebuild_timeout_s``) and return its description; raise if it cannot start."""

    @abstractmethod
    def _send(self, method: str, calls: list[Any]) -> Future:
        """Send one call to the current worker; a future of ``ServedShard.call``'s return."""

    @abstractmethod
    def _kill(self, final: bool = False) -> None:
        """Kill the current worker and everything it started, at once (no clean-up).

        ``final``: it must not come back (a backend whose engine restarts dead workers, Ray,
        lets it restart otherwise, and `_spawn` then waits for the restarted one)."""

    @abstractmethod
    def _shutdown(self) -> None:
        """Stop the current worker cleanly (its envs closed), killing it if it does not stop."""

    def _is_death(self, exc: BaseException) -> bool:
        """Whether an exception from `_send`'s future means the worker is gone."""
        return isinstance(exc, WorkerLost)

    # ------------------------------------------------------------------ lifecycle
    @property
    def description(self) -> EnvDescription:
        assert self._description is not None
        return self._description

    def _start_worker(self, first: bool = False) -> None:
        """Start (or rebuild) the worker; caller holds the lock. Raises `ShardRebuildError`."""
        while True:
            try:
                self._description = self._spawn()
            except Exception as exc:
                if first:
                    raise RuntimeError(
                        f"the {self.backend!r} env shard of {self.env_id} could not start: "
                        f"{_one_line(exc)}"
                    ) from exc
                self.count("shard_rebuild_failures")
                self._failed_rebuilds += 1
                with contextlib.suppress(Exception):  # best effort: the worker may be half-started
                    self._kill(final=True)
                if self._failed_rebuilds >= self.max_failed_rebuilds:
                    raise ShardRebuildError(
                        f"the {self.backend!r} env shard of {self.env_id} failed to rebuild "
                        f"{self._failed_rebuilds} times in a row (rollout.max_failed_rebuilds="
                        f"{self.max_failed_rebuilds}); last error: {_one_line(exc)}"
                    ) from exc
                continue
            break
        self._failed_rebuilds = 0
        self._alive = True
        self._episodes = 0
        if not first:
            self.count("shard_restarts")

    def _worker_died(self, generation: int, reason: str, timeout: bool = False) -> None:
        """End everything on worker `generation`: fail its calls, mark its episodes lost."""
        with self._lock:
            if generation != self._generation or not self._alive:
                return
            self._alive = False
            self._generation += 1
            if timeout:
                self.count("shard_timeouts")
            pending, self._pending = self._pending, {}
            lost = 0
            for slot in range(self.size):
                if self._running[slot] or self._busy[slot]:
                    lost += 1
                    if not self._busy[slot]:
                        self._lost[slot] = reason
                self._running[slot] = self._busy[slot] = False
            self.count("shard_lost_episodes", lost)
            with contextlib.suppress(Exception):  # it is dead or dying either way
                self._kill()
        for call in pending.values():
            _resolve(call.future, _lost_result(call.method, reason))

    def _recycle_due(self) -> bool:
        if self.recycle_episodes is not None and self._episodes >= self.recycle_episodes:
            return True
        if self.recycle_rss_mb is not None:
            try:
                health = self._send("health", []).result(timeout=self.rebuild_timeout_s)
            except Exception:
                return False  # a dead worker is noticed (and rebuilt) by the next call
            return float(health["rss_mb"]) > self.recycle_rss_mb
        return False

    def _recycle(self) -> None:
        self._generation += 1  # results of the old worker (there are none in flight) are ignored
        self._alive = False
        try:
            self._shutdown()
        except Exception:
            self._kill(final=True)
        self.count("shard_recycles")
        self._start_worker()

    def _watch(self) -> None:
        """Kill the worker when a call has been in flight for longer than step_timeout_s."""
        assert self.step_timeout_s is not None
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                late = [c for c in self._pending.values() if c.deadline <= now]
                if late:
                    call = late[0]
                    reason = (
                        f"env call timed out: {call.method} of slot {call.slot} took longer than "
                        f"step_timeout_s={self.step_timeout_s:g}; its shard was killed"
                    )
                    self._worker_died(call.generation, reason, timeout=True)
                    continue
                nearest = min((c.deadline for c in self._pending.values()), default=None)
                self._wake.wait(None if nearest is None else max(nearest - now, 0.001))

    # ------------------------------------------------------------------ calls
    def submit_many(self, method: str, calls: Sequence[Any]) -> list[Future]:
        """One future per call; every call is sent on its own, so the worker runs them at once."""
        out: list[Future] = []
        sent: list[tuple[int, Future]] = []
        with self._lock:
            if self._closed:
                raise RuntimeError(f"this {self.backend!r} env shard is closed")
            if not self._alive:
                self._start_worker()
            if (
                method == "reset_many"
                and not any(self._busy)
                and not any(self._running)
                and self._recycle_due()
            ):
                self._recycle()
            for call in calls:
                slot = int(call[0] if method in _TUPLE_CALLS else call)
                if not 0 <= slot < self.size:
                    raise IndexError(f"slot {slot} is outside this shard of {self.size} envs")
                if self._busy[slot]:
                    raise RuntimeError(f"slot {slot} already has a call in flight")
                fut: Future = Future()
                out.append(fut)
                if method in _NEEDS_EPISODE and self._lost[slot] is not None:
                    reason = f"episode lost: {self._lost[slot]}"
                    _resolve(fut, _lost_result(method, reason))
                    continue
                if method in ("reset_many", "restore_many"):
                    self._lost[slot] = None
                    self._episodes += method == "reset_many"
                self._busy[slot] = True
                deadline = time.monotonic() + (self.step_timeout_s or 0.0)
                call_id = next(self._ids)
                self._pending[call_id] = _Call(method, slot, self._generation, deadline, fut)
                sent.append((call_id, self._send(method, [call])))
            self._wake.notify_all()
        for call_id, raw in sent:
            raw.add_done_callback(lambda f, i=call_id: self._arrived(i, f))
        return out

    def _arrived(self, call_id: int, raw: Future) -> None:
        with self._lock:
            call = self._pending.get(call_id)
            if call is None:
                return  # already ended by a timeout or a death
            exc = raw.exception()
            if exc is not None and self._is_death(exc):
                generation = call.generation
                value: Any = None
            else:
                generation = None
                del self._pending[call_id]
                self._busy[call.slot] = False
                value = exc if exc is not None else raw.result()[0]
                if isinstance(value, SlotResult):
                    if call.method in ("reset_many", "restore_many"):
                        self._running[call.slot] = value.error is None
                    elif call.method == "step_many":
                        ended = value.error is not None or value.terminated or value.truncated
                        self._running[call.slot] = self._running[call.slot] and not ended
                    if value.error is not None and not value.diverged:
                        self._running[call.slot] = False
                        if not value.restart_failed and not value.error.startswith("episode lost"):
                            self.count("env_restarts")
                            self.restarts += 1
        if generation is not None:
            self._worker_died(generation, f"env worker lost: {_one_line(exc)}")
            return
        _resolve(call.future, value)

    def _call_all(self, method: str, calls: Sequence[Any]) -> list[Any]:
        return [f.result() for f in self.submit_many(method, calls)]

    def reset_many(self, calls: Sequence[tuple[int, int, int]]) -> list[SlotResult]:
        return self._call_all("reset_many", calls)

    def step_many(self, calls: Sequence[tuple[int, str]]) -> list[SlotResult]:
        return self._call_all("step_many", calls)

    def expert_many(self, slots: Sequence[int]) -> list[str | None]:
        return self._call_all("expert_many", slots)

    def snapshot_many(self, slots: Sequence[int]) -> list[Any]:
        return self._call_all("snapshot_many", slots)

    def restore_many(self, calls: Sequence[tuple[int, Any]]) -> list[SlotResult]:
        return self._call_all("restore_many", calls)

    def health(self) -> dict[str, Any]:
        """The worker's health (``rss_mb``, ``episodes``, ``pid``, ...) and ``alive``."""
        with self._lock:
            alive = self._alive
            raw = self._send("health", []) if alive else None
        if raw is None:
            return {
                "rss_mb": 0.0,
                "episodes": 0,
                "last_step_s": 0.0,
                "restarts": self.restarts,
                "pid": None,
                "alive": False,
            }
        try:
            health = dict(raw.result(timeout=self.rebuild_timeout_s))
        except Exception:
            return {
                "rss_mb": 0.0,
                "episodes": 0,
                "last_step_s": 0.0,
                "restarts": self.restarts,
                "pid": None,
                "alive": False,
            }
        health["restarts"] = self.restarts
        health["alive"] = True
        return health

    def close(self) -> None:
        """Stop the worker (envs closed, then killed if it lingers); calls in flight are lost."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending = self._pending, {}
            alive, self._alive = self._alive, False
            self._generation += 1
            self._wake.notify_all()
        for call in pending.values():
            _resolve(call.future, _lost_result(call.method, "env shard closed"))
        try:
            if alive:
                self._shutdown()
            else:
                self._kill(final=True)
        except Exception:
            self._kill(final=True)
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)


def _resolve(fut: Future, value: Any) -> None:
    if fut.done():
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)
