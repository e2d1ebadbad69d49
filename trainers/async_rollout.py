"""Asynchronous rollouts (``rollout.mode: async``): episodes advance independently while the
learner trains, at most ``rollout.max_staleness`` policy versions behind (SCALE.md section 3).

`AsyncRollouts` runs a coordinator thread over an `EnvPool` and an agent:

- **Admission.** The unit is the whole group (G episodes, one task and seed), so a group is never
  split across batches. Groups are admitted in order while ``admitted <= (S + v + 1) x B``, where
  v is the current policy version (updates published) and B the groups per batch. Group i
  belongs to batch ``i // B + 1``, drawn from the task sampler in order with the sync mode's
  seeds, so with S = 0 every batch is exactly the sync mode's batch.
- **Independent episodes.** An episode's next generation request goes out as soon as its env
  step returns, and its next env step as soon as its generation returns. With a backend that
  takes concurrent requests (``concurrent_generate``: an OpenAI-compatible server, vLLM
  replicas) every request is sent on its own; otherwise (``hf``, the in-process vLLM engine)
  whatever is waiting goes out in one batched call while no other is running.
- **Versions.** Every step records ``policy_version`` = v + 1 at the moment its request was sent
  (the sync mode's label: the iteration that policy collects for), next to the sampler's
  log-probs the agent already records. `paused` holds new requests back and waits for the
  running ones, so a weight sync never lands in the middle of a request.
- **Batches.** ``take(k)`` returns batch k once all its groups are complete, groups in admission
  order and members in order, as `creditgym.trainers.strategies.RolloutBatch`. Errored episodes
  are dropped as in lock-step rollouts.

`AsyncDriver` wires this into `creditgym.trainers.train.Trainer`: the rollout of an iteration,
the pause around learning when the backend generates with the learner's own module, the weight
sync, the staleness histogram, and the task sampler's state per batch for checkpoints. On
``--resume`` the groups that were in flight are discarded: the checkpoint of iteration k holds the
sampler as it was after batch k was drawn, so batches k + 1, ... are drawn and played again with
the restored policy.
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import queue
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from creditgym.agents.base import Turn, agent_needs
from creditgym.credit.trajectory import Trajectory, TrajectoryGroup, flat_steps
from creditgym.trainers.shards import EnvPool, SlotResult
from creditgym.trainers.strategies import (
    Episode,
    RolloutBatch,
    assemble,
    batch_stats,
    contexts_for,
    record_step,
)

__all__ = ["AsyncDriver", "AsyncRollouts", "staleness_metrics"]


@dataclass
class _Group:
    """One admitted group: its place in the stream of groups and its episodes."""

    index: int
    batch: int
    position: int
    task: int
    seed: int
    episodes: list[Episode] = field(default_factory=list)
    remaining: int = 0
    admitted_at: float = 0.0


@dataclass
class _Batch:
    """What is known of batch k: its tasks and seeds, and its groups once admitted."""

    tasks: list[int]
    seeds: list[int]
    groups: list[_Group] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    first_admitted: float = 0.0


def _fail_reset(ep: Episode, res: SlotResult, stats: dict[str, float]) -> None:
    ep.traj.error = res.error
    ep.done = True
    ep.info.setdefault("state_key", "")
    stats["env_errors"] += 1
    if res.restart_failed:
        stats["env_restart_failures"] += 1


class AsyncRollouts:
    """Plays groups on ``pool`` with ``agent`` in a background thread (see the module docstring).

    Args:
        pool: the env pool; it is grown to (S + 1) x B x G envs, the most that can be running.
        agent: the agent (``act(contexts) -> turns``), called from worker threads.
        batch_groups: B, groups per batch.
        group_size: G, episodes per group.
        max_staleness: S.
        next_batch: ``next_batch(k) -> (task indices, seeds)`` of batch k, called once per
            batch, in order, from the coordinator thread.
        start_version: the policy version at start (the iteration a resumed run restarts
            after); the first batch is ``start_version + 1``.
        concurrent_generate: send each episode's request on its own (see the module docstring).
        max_requests: requests in flight at once when ``concurrent_generate``.
    """

    def __init__(
        self,
        pool: EnvPool,
        agent: Any,
        *,
        batch_groups: int,
        group_size: int,
        max_staleness: int,
        next_batch: Callable[[int], tuple[Sequence[int], Sequence[int]]],
        start_version: int = 0,
        concurrent_generate: bool = False,
        max_requests: int = 64,
    ):
        if batch_groups < 1 or group_size < 1:
            raise ValueError(f"need B >= 1 and G >= 1, got B={batch_groups}, G={group_size}")
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.pool, self.agent = pool, agent
        self.B, self.G, self.S = int(batch_groups), int(group_size), int(max_staleness)
        self._next_batch = next_batch
        self.start_version = self.version = int(start_version)
        self.concurrent = bool(concurrent_generate)
        self.max_requests = max(1, int(max_requests)) if self.concurrent else 1
        self._wants_expert = "expert_action" in agent_needs(agent)
        if self._wants_expert and not pool.description.has_expert:
            raise TypeError(f"{pool.env_id} has no expert: its env class must implement one")
        pool.ensure((self.S + 1) * self.B * self.G)
        self._free = list(range(pool.size))
        heapq.heapify(self._free)
        self._cond = threading.Condition()
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._batches: dict[int, _Batch] = {}
        self._ready: dict[int, RolloutBatch] = {}
        self._waiting: list[tuple[Episode, _Group, str | None]] = []
        self._admitted = 0
        self._gen_in_flight = 0
        self._paused = False
        self._stopping = False
        self._error: BaseException | None = None
        self._env = ThreadPoolExecutor(max_workers=pool.size, thread_name_prefix="async-env")
        self._gen = ThreadPoolExecutor(self.max_requests, thread_name_prefix="async-gen")
        self._thread = threading.Thread(target=self._run, name="async-rollouts", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ trainer side
    def take(self, k: int, timeout: float | None = None) -> RolloutBatch:
        """Batch k once all its groups are complete (raises what the rollout thread raised)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while k not in self._ready:
                self._raise_error()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"batch {k} was not complete after {timeout} s")
                self._cond.wait(timeout=left if left is not None else 1.0)
            return self._ready.pop(k)

    def publish(self, version: int) -> None:
        """The learner is now at policy ``version`` (updates done): admit more groups."""
        with self._cond:
            self.version = max(self.version, int(version))
        self._events.put(("wake",))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Send no generation request, and wait for the running ones, for the block's duration."""
        with self._cond:
            self._paused = True
            while self._gen_in_flight and self._error is None:
                self._cond.wait(timeout=1.0)
            self._raise_error()
        try:
            yield
        finally:
            with self._cond:
                self._paused = False
            self._events.put(("wake",))

    def close(self) -> None:
        """Stop the coordinator; episodes still running are abandoned (their envs stay in the
        pool, which its owner closes)."""
        with self._cond:
            self._stopping = True
        self._events.put(("wake",))
        self._thread.join(timeout=30)
        self._gen.shutdown(wait=False, cancel_futures=True)
        self._env.shutdown(wait=False, cancel_futures=True)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the asynchronous rollout failed: {self._error}") from self._error

    # ------------------------------------------------------------------ coordinator
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    self._admit()
                    self._dispatch()
                try:
                    event = self._events.get(timeout=1.0)
                except queue.Empty:
                    continue
                with self._cond:
                    self._handle(event)
        except BaseException as exc:  # surfaced to the trainer by take / paused
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _limit(self) -> int:
        """Groups that may have been admitted so far: (S + v + 1) x B, counted from the start."""
        return (self.S + self.version - self.start_version + 1) * self.B

    def _admit(self) -> None:
        while self._admitted < self._limit() and len(self._free) >= self.G:
            index = self.start_version * self.B + self._admitted
            k, position = index // self.B + 1, index % self.B
            if k not in self._batches:
                tasks, seeds = self._next_batch(k)
                if len(tasks) != self.B or len(seeds) != self.B:
                    raise ValueError(f"next_batch({k}) gave {len(tasks)} tasks for B={self.B}")
                batch = _Batch([int(t) for t in tasks], [int(s) for s in seeds])
                batch.first_admitted = time.perf_counter()
                self._batches[k] = batch
            batch = self._batches[k]
            group = _Group(index, k, position, batch.tasks[position], batch.seeds[position])
            group.admitted_at = time.perf_counter()
            slots = [heapq.heappop(self._free) for _ in range(self.G)]
            group.episodes = [
                Episode(group=position, slot=s, traj=Trajectory(seed=group.seed)) for s in slots
            ]
            group.remaining = self.G
            batch.groups.append(group)
            self._admitted += 1
            self._submit(self._env, ("reset", group), self._reset_job, group)

    def _submit(self, pool: ThreadPoolExecutor, tag: tuple[Any, ...], fn: Callable, *args) -> None:
        future = pool.submit(fn, *args)

        def done(f: Future) -> None:
            self._events.put((*tag, f))

        future.add_done_callback(done)

    def _dispatch(self) -> None:
        if self._paused or not self._waiting:
            return
        if self.concurrent:
            while self._waiting and self._gen_in_flight < self.max_requests:
                self._send([self._waiting.pop(0)])
        elif self._gen_in_flight == 0:
            items, self._waiting = self._waiting, []
            self._send(items)

    def _send(self, items: list[tuple[Episode, _Group, str | None]]) -> None:
        episodes = [ep for ep, _, _ in items]
        contexts = contexts_for(self.pool, episodes, [e for _, _, e in items])
        label = self.version + 1
        self._gen_in_flight += 1
        self._submit(self._gen, ("gen", items, contexts, label), self.agent.act, contexts)

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "wake":
            return
        future: Future = event[-1]
        if kind == "reset":
            self._on_reset(event[1], future.result())
        elif kind == "gen":
            self._gen_in_flight -= 1
            self._cond.notify_all()
            _, items, contexts, label, _ = event
            turns = future.result()  # a failing backend stops the run (take raises)
            if len(turns) != len(items):
                raise RuntimeError(f"agent returned {len(turns)} turns for {len(items)} contexts")
            for (ep, group, _), ctx, turn in zip(items, contexts, turns):
                self._submit(
                    self._env, ("step", ep, group, ctx, turn, label), self._step_job, ep, turn
                )
        elif kind == "step":
            _, ep, group, ctx, turn, label, _ = event
            res, expert = future.result()
            before = len(ep.traj.steps)
            record_step(ep, ctx, turn, res, self._batches[group.batch].stats)
            if len(ep.traj.steps) > before:
                ep.traj.steps[-1].policy_version = label
            if ep.done:
                self._episode_done(ep, group)
            else:
                self._waiting.append((ep, group, expert))

    # ------------------------------------------------------------------ env jobs (worker threads)
    def _reset_job(self, group: _Group) -> tuple[list[SlotResult], list[str | None]]:
        slots = [ep.slot for ep in group.episodes]
        results = self.pool.reset_many([(s, group.task, group.seed) for s in slots])
        experts: list[str | None] = [None] * len(slots)
        if self._wants_expert:
            experts = self.pool.expert_many(slots)
        return results, experts

    def _step_job(self, ep: Episode, turn: Turn) -> tuple[SlotResult, str | None]:
        res = self.pool.step_many([(ep.slot, turn.action)])[0]
        expert = None
        ends = res.error is not None or res.terminated or res.truncated
        if self._wants_expert and not ends and not res.info.get("error"):
            expert = self.pool.expert_many([ep.slot])[0]
        return res, expert

    # ------------------------------------------------------------------ bookkeeping
    def _on_reset(self, group: _Group, out: tuple[list[SlotResult], list[str | None]]) -> None:
        results, experts = out
        stats = self._batches[group.batch].stats
        for ep, res, expert in zip(group.episodes, results, experts):
            if res.error is not None:
                _fail_reset(ep, res, stats)
            else:
                ep.obs, ep.info = res.obs, res.info
            ep.traj.task_id = str(ep.info.get("task_id", group.task))
            ep.traj.task_type = str(ep.info.get("task_type", "default"))
            if ep.done:
                self._episode_done(ep, group)
            else:
                self._waiting.append((ep, group, expert))

    def _episode_done(self, ep: Episode, group: _Group) -> None:
        heapq.heappush(self._free, ep.slot)
        group.remaining -= 1
        batch = self._batches[group.batch]
        if group.remaining or len(batch.groups) < self.B:
            return
        if any(g.remaining for g in batch.groups):
            return
        self._ready[group.batch] = self._assemble(group.batch, batch)
        del self._batches[group.batch]
        self._cond.notify_all()

    def _assemble(self, k: int, batch: _Batch) -> RolloutBatch:
        episodes = [ep for g in sorted(batch.groups, key=lambda g: g.position) for ep in g.episodes]
        groups, dropped = assemble(self.pool, episodes, batch.seeds)
        turns = max((len(ep.traj.steps) for g in batch.groups for ep in g.episodes), default=0)
        stats = dict(batch.stats)
        stats["wall_s"] = time.perf_counter() - batch.first_admitted
        take_counters = getattr(self.pool, "take_counters", None)  # shard restarts, timeouts...
        if take_counters is not None:
            stats.update(take_counters())
        stats.update(batch_stats(groups, dropped, turns))
        stats["tasks"] = batch.tasks  # type: ignore[assignment]
        return RolloutBatch(groups=groups, stats=stats, dropped=dropped)


def staleness_metrics(groups: Sequence[TrajectoryGroup], iteration: int) -> dict[str, float]:
    """Steps by staleness (iteration - policy_version): fractions per value, mean and max."""
    ages = [iteration - int(s.policy_version) for s in flat_steps(groups) if s.policy_version]
    if not ages:
        return {}
    counts = Counter(ages)
    out = {f"rollout/staleness/{age}": n / len(ages) for age, n in sorted(counts.items())}
    out["rollout/staleness_mean"] = sum(ages) / len(ages)
    out["rollout/staleness_max"] = float(max(ages))
    return out


def _shares_module(backend: Any, learner: Any) -> bool:
    """Whether ``backend`` generates with the learner's own module (``hf`` sharing it)."""
    inner = getattr(backend, "_backend", backend)
    model = getattr(inner, "model", None)
    return model is not None and model is getattr(learner, "model", None)


class AsyncDriver:
    """The trainer's side of async mode: one `AsyncRollouts` over its pool, sampler and agent."""

    def __init__(self, trainer: Any):
        from creditgym.trainers.seeding import group_seeds

        cfg = trainer.config
        self.trainer = trainer
        self._sampler_states: dict[int, dict[str, Any]] = {}
        self._group_seeds = group_seeds
        self._seed = cfg.seed
        self.B = cfg.rollout.tasks_per_iteration
        self._iteration = trainer.start_iteration
        self.shares_module = _shares_module(trainer.backend, trainer.learner)
        self.rollouts = AsyncRollouts(
            trainer.pool,
            trainer.agent,
            batch_groups=self.B,
            group_size=cfg.rollout.group_size,
            max_staleness=cfg.rollout.max_staleness,
            next_batch=self._next_batch,
            start_version=trainer.start_iteration,
            concurrent_generate=bool(getattr(trainer.backend, "concurrent_generate", False)),
        )

    def _next_batch(self, k: int) -> tuple[list[int], list[int]]:
        tasks = self.trainer.sampler.next(self.B)
        self._sampler_states[k] = copy.deepcopy(self.trainer.sampler.state_dict())
        return tasks, self._group_seeds(self._seed, k, self.B)

    def sampler_state(self, k: int) -> dict[str, Any]:
        """The sampler as it was right after batch k was drawn (what a checkpoint of k holds)."""
        for old in [j for j in self._sampler_states if j < k]:
            del self._sampler_states[old]
        return self._sampler_states[k]

    def rollout(self, k: int, times: dict[str, float]) -> tuple[list[TrajectoryGroup], dict]:
        """Iteration k's groups (batch k) and its rollout metrics, staleness included."""
        self._iteration = k
        self.rollouts.publish(k - 1)  # an iteration that trained on nothing still moves on
        t0 = time.perf_counter()
        self.trainer.display.phase(f"rollout (async, waiting for batch {k})")
        batch = self.rollouts.take(k)
        # The iteration's own rollout time is the wait for its batch (generation and env steps
        # overlap each other and the learner); the busy seconds of generate go to the metrics.
        times["generate"] = time.perf_counter() - t0
        gen_busy, gen_tokens = self.trainer.timed.take()
        agent_metrics = self.trainer.agent.metrics(reset=True)
        groups = [g for g in batch.groups if g.trajectories]
        tasks = batch.stats.pop("tasks")
        metrics: dict[str, Any] = {f"rollout/{key}": v for key, v in batch.stats.items()}
        metrics["rollout/generated_tokens"] = float(gen_tokens)
        metrics["rollout/generate_busy_s"] = gen_busy
        metrics["rollout/tasks"] = [int(t) for t in tasks]
        metrics.update(staleness_metrics(groups, k))
        metrics.update({f"agent/{key}": v for key, v in agent_metrics.items()})
        return groups, metrics

    def learning(self) -> contextlib.AbstractContextManager[None]:
        """Around prepare / credit / update: a pause when generation uses the learner's module."""
        return self.rollouts.paused() if self.shares_module else contextlib.nullcontext()

    def sync(self, fn: Callable[[], float]) -> float:
        """Run the weight sync ``fn`` with generation paused, then publish the version of the
        iteration being trained (k after iteration k's update)."""
        with self.rollouts.paused():
            seconds = fn()
        self.rollouts.publish(self._iteration)
        return seconds

    def paused(self) -> contextlib.AbstractContextManager[None]:
        return self.rollouts.paused()

    def close(self) -> None:
        self.rollouts.close()
