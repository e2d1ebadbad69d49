"""Branching rollouts: continue recorded trajectories from an intermediate state, k times.

A `BranchRequest` names a recorded `Trajectory`, a step ``t`` and a count ``k``. `branch_many`
restores the state before step t of each request on ``k`` slots of an `EnvPool`
(``restore_many``: replay of the recorded actions, or a native snapshot) and continues every copy
under the agent's current policy, in lock step: one `agent.act` call per turn over every running
continuation of every request, so the k copies of one state share a generation call.

The record is the source of truth for the prefix:

- each continuation starts with shallow copies of the recorded steps 0..t-1 (same token ids,
  log-probs and text: the token-exact invariant), and only steps t.. are new;
- the agent's context at step t is rebuilt from the record (task and observation from the
  restore, which must equal the recorded observation; history = the recorded (observation,
  action) pairs; step number t), so no LLM call is repeated for the prefix;
- an agent with hidden per-episode memory implements ``branch_memory(env_id, episode, prefix)``,
  called with each continuation's slot and recorded prefix steps before its first turn (the LLM agent's
  ``concat`` context and the hierarchical tabular agent's current subgoal do; stateless agents
  need nothing).

A restore that does not reach the recorded state (`BranchDivergence`, or a restored observation
that differs from the recorded one) drops that continuation and counts it (``stats["diverged"]``);
an env error drops and counts it as in lock step (``stats["env_errors"]``). Dropped continuations
are kept in `BranchBatch.dropped` for inspection, never returned as continuations.

Q^pi(s_t, a_t) of a recorded action is r_t plus the mean return of continuations branched at
t + 1 (the envs are deterministic); V^pi(s_t) is the mean return of continuations branched at t.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from creditgym.agents.base import Agent, agent_needs
from creditgym.credit.trajectory import Trajectory
from creditgym.envs.branching import EnvSnapshot, branching_of, snapshot_from_record
from creditgym.trainers.shards import EnvPool, SlotResult

if TYPE_CHECKING:
    from creditgym.trainers.strategies import Episode

# `strategies` is imported where it is used: the branching strategies that `strategies` loads
# import this module, so a module-level import here would be circular.

__all__ = ["BranchBatch", "BranchRequest", "BranchResult", "branch", "branch_many"]

_TRAJ_FIELDS = {f.name for f in dataclasses.fields(Trajectory)}


@dataclass(frozen=True)
class BranchRequest:
    """Continue `traj` k times from the state before its step `t` (``0 <= t < len(traj)``, or
    ``t = len(traj)``: after its last step, for an open trajectory, e.g. one cut by a horizon).

    `snapshot` (optional) is that state as an `EnvSnapshot` (e.g. taken with ``snapshot_many``
    during the rollout, native where the env has native snapshots); by default it is built from
    the record (`snapshot_from_record`) and replayed. `tag` is the caller's, copied to the result.
    """

    traj: Trajectory
    t: int
    k: int
    snapshot: EnvSnapshot | None = None
    tag: Any = None


@dataclass
class BranchResult:
    """The kept continuations of one request (at most k) and what was dropped."""

    request: BranchRequest
    continuations: list[Trajectory] = field(default_factory=list)
    #: Continuations dropped because the restore did not reach the recorded state.
    diverged: int = 0
    #: Continuations dropped because of an env error.
    errors: int = 0
    #: With ``snapshot_end=True``: each kept continuation's final state, in the same order.
    end_snapshots: list[EnvSnapshot] = field(default_factory=list)


@dataclass
class BranchBatch:
    """The results of `branch_many`, one per request, and the batch's counters."""

    results: list[BranchResult]
    #: restores, diverged, env_errors, continuations, turns (lock-step turns), generated (agent
    #: decisions made, i.e. policy turns generated), time_restore_s, time_env_s, time_agent_s.
    stats: dict[str, float] = field(default_factory=dict)
    #: Continuations that diverged or ended in an env error (never train on them).
    dropped: list[Trajectory] = field(default_factory=list)


def _check(request: BranchRequest) -> None:
    n = len(request.traj)
    if request.k < 1:
        raise ValueError(f"a branch needs k >= 1 continuations, got k={request.k}")
    last = request.traj.steps[-1] if n else None
    # t = n continues an open trajectory (cut by a horizon: its end state is not terminal).
    open_end = last is not None and not (last.terminated or last.truncated)
    if not (0 <= request.t < n or (request.t == n and (open_end or request.snapshot))):
        raise ValueError(
            f"branch step t={request.t} is outside [0, {n}) for a trajectory of {n} steps "
            "(t = len(traj) only when its last step neither terminated nor truncated, or with "
            "a snapshot)"
        )
    if request.traj.error is not None:
        raise ValueError(
            f"cannot branch a trajectory that ended in an env error: {request.traj.error}"
        )


def _branch_info(request: BranchRequest, index: int, copy_index: int) -> dict[str, Any]:
    """What `Trajectory.info["branch"]` records about a continuation."""
    return {
        "pivot": request.t,
        "source_len": len(request.traj),
        "request": index,
        "copy": copy_index,
        "open": False,
    }


def _continuation(request: BranchRequest, index: int, slot: int) -> Episode:
    from creditgym.trainers.strategies import Episode

    src, t = request.traj, request.t
    prefix = [copy.copy(s) for s in src.steps[:t]]
    traj = Trajectory(
        steps=prefix,
        task_id=src.task_id,
        seed=src.seed,
        task_type=src.task_type,
    )
    if "pivot" in _TRAJ_FIELDS:
        traj.pivot = t  # type: ignore[attr-defined]
    if "role" in _TRAJ_FIELDS:
        traj.role = "replayed"  # type: ignore[attr-defined]
    history = [(s.observation, s.action) for s in src.steps[:t]]
    return Episode(group=index, slot=slot, traj=traj, history=history)


def _restore(pool: EnvPool, episodes: list[Episode], snaps: list[EnvSnapshot]) -> list[SlotResult]:
    """Restore every episode's slot to its request's snapshot (one batched call per round).

    On an env with native snapshots, a snapshot without payload is replayed once per request and
    the other copies restore from the native snapshot taken right after.
    """
    calls = [(ep.slot, snaps[ep.group]) for ep in episodes]
    if branching_of(pool.env_id) != "snapshot":
        return pool.restore_many(calls)
    first: dict[int, int] = {}
    for pos, ep in enumerate(episodes):
        if snaps[ep.group].payload is None:
            first.setdefault(ep.group, pos)
    if not first:
        return pool.restore_many(calls)
    out: list[SlotResult | None] = [None] * len(episodes)
    positions = list(first.values())
    for pos, res in zip(positions, pool.restore_many([calls[p] for p in positions])):
        out[pos] = res
    ok = [p for p in positions if out[p].error is None]  # type: ignore[union-attr]
    native = dict(
        zip((episodes[p].group for p in ok), pool.snapshot_many([calls[p][0] for p in ok]))
    )
    rest = [p for p in range(len(episodes)) if out[p] is None]
    for pos, res in zip(
        rest,
        pool.restore_many(
            [(calls[p][0], native.get(episodes[p].group, calls[p][1])) for p in rest]
        ),
    ):
        out[pos] = res
    return out  # type: ignore[return-value]


def branch_many(
    pool: EnvPool,
    agent: Agent,
    requests: Sequence[BranchRequest],
    *,
    horizon: int | None = None,
    snapshot_end: bool = False,
    first_slot: int = 0,
    on_turn: Callable[[int, int], None] | None = None,
) -> BranchBatch:
    """Continue every request's trajectory k times from its step t, all in lock step.

    Slots ``first_slot .. first_slot + sum(k) - 1`` of `pool` are used (the pool grows when it
    is smaller). ``horizon`` caps the new turns per continuation (None: to the episode's end); a
    continuation cut by it has ``info["branch"]["open"] = True``. ``snapshot_end`` also returns
    each kept continuation's final state (`BranchResult.end_snapshots`), e.g. to branch again.
    """
    from creditgym.trainers.strategies import contexts_for, record_step

    for request in requests:
        _check(request)
    if horizon is not None and horizon < 1:
        raise ValueError(f"horizon must be >= 1 or None, got {horizon}")
    if first_slot < 0:
        raise ValueError(f"first_slot must be >= 0, got {first_slot}")
    results = [BranchResult(request=r) for r in requests]
    stats: dict[str, float] = defaultdict(float)
    for name in ("restores", "diverged", "env_errors", "continuations", "turns", "generated"):
        stats[name] = 0.0
    if not requests:
        return BranchBatch(results=results, stats=dict(stats))
    pool.ensure(first_slot + sum(r.k for r in requests))
    wants_expert = "expert_action" in agent_needs(agent)
    if wants_expert and not pool.description.has_expert:
        raise TypeError(
            f"{pool.env_id} has no expert: its env class must implement expert_action()"
        )
    snaps = [
        r.snapshot
        if r.snapshot is not None
        else snapshot_from_record(pool.env_id, pool.split, r.traj, r.t)
        for r in requests
    ]
    episodes: list[Episode] = []
    meta: list[dict[str, Any]] = []
    for i, r in enumerate(requests):
        for j in range(r.k):
            episodes.append(_continuation(r, i, first_slot + len(episodes)))
            meta.append(_branch_info(r, i, j))

    t0 = time.perf_counter()
    restored = _restore(pool, episodes, snaps)
    stats["restores"] = float(len(episodes))
    stats["time_restore_s"] = time.perf_counter() - t0
    dropped: list[Trajectory] = []
    failed_restore: set[int] = set()
    for n, (ep, res) in enumerate(zip(episodes, restored)):
        src, t = requests[ep.group].traj, requests[ep.group].t
        expected = src.steps[t].observation if t < len(src) else None
        if res.error is None and expected is not None and res.obs != expected:
            res.error = "BranchDivergence: the restored observation differs from the recorded one"
            res.diverged = True
        if res.error is not None:
            ep.traj.error, ep.done = res.error, True
            failed_restore.add(n)
            if res.diverged:
                stats["diverged"] += 1
                results[ep.group].diverged += 1
            else:
                stats["env_errors"] += 1
                results[ep.group].errors += 1
            continue
        ep.obs, ep.info = res.obs, res.info
        memory = getattr(agent, "branch_memory", None)
        if memory is not None:
            memory(pool.env_id, ep.slot, ep.traj.steps)

    t_env = t_agent = 0.0
    turn = 0
    new_turns = dict.fromkeys(range(len(episodes)), 0)
    index = {id(ep): n for n, ep in enumerate(episodes)}
    while active := [
        ep
        for ep in episodes
        if not ep.done and (horizon is None or new_turns[index[id(ep)]] < horizon)
    ]:
        t0 = time.perf_counter()
        experts = (
            pool.expert_many([ep.slot for ep in active]) if wants_expert else [None] * len(active)
        )
        contexts = contexts_for(pool, active, experts)
        t_env += time.perf_counter() - t0
        t0 = time.perf_counter()
        turns = agent.act(contexts)
        t_agent += time.perf_counter() - t0
        if len(turns) != len(active):
            raise RuntimeError(f"agent returned {len(turns)} turns for {len(active)} contexts")
        stats["generated"] += len(active)
        t0 = time.perf_counter()
        step_results = pool.step_many([(ep.slot, out.action) for ep, out in zip(active, turns)])
        for ep, ctx, out, res in zip(active, contexts, turns, step_results):
            record_step(ep, ctx, out, res, stats)
            new_turns[index[id(ep)]] += 1
        t_env += time.perf_counter() - t0
        turn += 1
        if on_turn is not None:
            on_turn(turn, len(active))

    kept = []
    for n, ep in enumerate(episodes):
        result = results[ep.group]
        ep.traj.info["branch"] = meta[n]
        if ep.traj.error is not None:
            if n not in failed_restore:  # an env error while continuing (counted by record_step)
                result.errors += 1
            dropped.append(ep.traj)
            continue
        if not ep.done:
            meta[n]["open"] = True
        result.continuations.append(ep.traj)
        kept.append(ep)
    if snapshot_end and kept:
        t0 = time.perf_counter()
        for ep, snap in zip(kept, pool.snapshot_many([ep.slot for ep in kept])):
            results[ep.group].end_snapshots.append(snap)
        stats["time_restore_s"] += time.perf_counter() - t0
    stats["continuations"] = float(len(kept))
    stats["turns"] = float(turn)
    stats["time_env_s"] = t_env
    stats["time_agent_s"] = t_agent
    return BranchBatch(results=results, stats=dict(stats), dropped=dropped)


def branch(
    pool: EnvPool, agent: Agent, traj: Trajectory, t: int, k: int, **options: Any
) -> BranchResult:
    """`branch_many` for one request: k continuations of `traj` from the state before step t."""
    return branch_many(pool, agent, [BranchRequest(traj, t, k)], **options).results[0]
