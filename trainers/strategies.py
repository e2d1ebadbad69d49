"""Rollout strategies: how B tasks x G episodes are played on an env pool, chosen by name.

A strategy talks to envs only through the shard interface (`creditgym.trainers.shards`:
``reset_many`` / ``step_many`` / ``expert_many`` on an `EnvPool`), never to a live env, so it
runs unchanged on any env backend. ``rollout.strategy`` names one; `available()` lists them and
`make(name, **options)` builds one. Each declares ``supports_async``: whether it can run with
asynchronous, staleness-bounded rollouts (SCALE.md section 3); tree, MC-chain and retry
strategies may refuse.

The building blocks (`start_episodes`, `contexts_for`, `record_step`, `assemble`,
`batch_stats`) are shared, so a new strategy changes only the order in which it steps.

``lockstep`` (the default, today's loop): all episodes of all groups advance in turns, one
batched `agent.act` call per turn for the episodes still running (finished episodes never act).
All G members of a group reset with the same task and seed. An env that raises, or reports
``info["error"]`` (an infrastructure failure such as a dead server), ends that episode: it is
counted, its env is rebuilt (by the shard), and the trajectory is dropped from its group, so
nothing is ever trained on a broken episode. A group that lost members keeps the rest if at least
2 remain (`keep_group`); otherwise the whole group is dropped.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from creditgym.agents.base import Agent, Context, Turn, agent_needs
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers.registry import Registry
from creditgym.trainers.shards import EnvPool, SlotResult

__all__ = [
    "Episode",
    "LockstepStrategy",
    "assemble",
    "contexts_for",
    "keep_group",
    "record_step",
    "start_episodes",
    "RolloutBatch",
    "RolloutStrategy",
    "available",
    "batch_stats",
    "make",
    "register_strategy",
    "async_strategies",
    "strategy_class",
]


@dataclass
class RolloutBatch:
    groups: list[TrajectoryGroup]
    stats: dict[str, float] = field(default_factory=dict)
    #: Trajectories dropped because of env errors (kept for inspection, never trained on).
    dropped: list[Trajectory] = field(default_factory=list)


class RolloutStrategy(ABC):
    """Plays groups of episodes on an `EnvPool` with an agent and returns a `RolloutBatch`."""

    #: Registry name.
    name: ClassVar[str] = ""
    #: Whether the strategy can run with asynchronous (staleness-bounded) rollouts.
    supports_async: ClassVar[bool] = False
    #: Whether the strategy restores envs to intermediate states (``snapshot_many`` /
    #: ``restore_many``); the config refuses it on an env with ``branching = "none"``.
    needs_branching: ClassVar[bool] = False

    @abstractmethod
    def collect(
        self,
        pool: EnvPool,
        agent: Agent,
        task_indices: Sequence[int],
        group_size: int,
        seeds: Sequence[int],
        on_turn: Callable[[int, int], None] | None = None,
    ) -> RolloutBatch:
        """Roll out ``len(task_indices)`` groups of ``group_size`` episodes.

        ``task_indices[b]`` is an index into the pool's panel and ``seeds[b]`` the reset seed
        shared by group b. ``on_turn(turn, active)`` is called after every turn (progress).
        """


# Branching strategies (issue 18: mc_chain, tree, retry) register from their own module.
_STRATEGIES: Registry[type[RolloutStrategy]] = Registry(
    "rollout strategy", attr="name", builtins=("creditgym.trainers.strategies_branching",)
)

#: Class decorator: register a `RolloutStrategy` under a name (``rollout.strategy``).
register_strategy = _STRATEGIES.register
#: Registered rollout strategies (``rollout.strategy`` values).
available = _STRATEGIES.available


def make(name: str, **options: Any) -> RolloutStrategy:
    """Build the strategy registered as `name`."""
    return _STRATEGIES.get(name)(**options)


def strategy_class(name: str) -> type[RolloutStrategy]:
    """The class registered as `name` (read its ``supports_async`` without building it)."""
    return _STRATEGIES.get(name)


def async_strategies() -> list[str]:
    """Registered strategies that run with ``rollout.mode: async``."""
    return [n for n in available() if _STRATEGIES.get(n).supports_async]


def batch_stats(
    groups: Sequence[TrajectoryGroup],
    dropped: Sequence[Trajectory],
    turns: int,
    timings: dict[str, float] | None = None,
) -> dict[str, float]:
    """Success, return, score, invalid rate, length, `timings`, then per-type success."""
    finished = [t for g in groups for t in g.trajectories]
    n = max(len(finished), 1)
    steps = sum(len(t) for t in finished)
    invalid = sum(1 for t in finished for s in t.steps if not s.valid)
    stats = {
        "episodes": float(len(finished)),
        "steps": float(steps),
        "turns": float(turns),
        "success": sum(t.won for t in finished) / n,
        "mean_return": sum(sum(s.reward for s in t.steps) for t in finished) / n,
        "mean_score": sum(t.info.get("score", 0.0) for t in finished) / n,
        "invalid_rate": invalid / max(steps, 1),
        "mean_length": steps / n,
        "dropped": float(len(dropped)),
        **(timings or {}),
    }
    by_type: dict[str, list[float]] = defaultdict(list)
    for t in finished:
        by_type[t.task_type].append(float(t.won))
    for k, v in by_type.items():
        stats[f"success/{k}"] = sum(v) / len(v)
    return stats


@dataclass
class Episode:
    """One running episode of a rollout: its group, its pool slot and what it has recorded."""

    group: int
    slot: int
    traj: Trajectory
    obs: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[str, str]] = field(default_factory=list)
    done: bool = False


def _fail(ep: Episode, result: SlotResult, stats: dict[str, float]) -> None:
    """Record an env failure the shard reported: end the episode and mark it errored."""
    ep.traj.error = result.error
    ep.done = True
    ep.info.setdefault("state_key", "")
    stats["env_errors"] += 1
    if result.restart_failed:
        stats["env_restart_failures"] += 1


def start_episodes(
    pool: EnvPool,
    task_indices: Sequence[int],
    group_size: int,
    seeds: Sequence[int],
    stats: dict[str, float],
) -> list[Episode]:
    """Reset slot ``b * group_size + m`` to task b with seed b, for every group b and member m."""
    episodes = [
        Episode(group=b, slot=b * group_size + m, traj=Trajectory(seed=int(seed)))
        for b, seed in enumerate(seeds)
        for m in range(group_size)
    ]
    results = pool.reset_many(
        [(ep.slot, int(task_indices[ep.group]), int(seeds[ep.group])) for ep in episodes]
    )
    for ep, res in zip(episodes, results):
        if res.error is not None:
            _fail(ep, res, stats)
        else:
            ep.obs, ep.info = res.obs, res.info
        ep.traj.task_id = str(ep.info.get("task_id", task_indices[ep.group]))
        ep.traj.task_type = str(ep.info.get("task_type", "default"))
    return episodes


def contexts_for(
    pool: EnvPool, episodes: Sequence[Episode], experts: Sequence[str | None]
) -> list[Context]:
    """What the agent sees for each running episode (data only: no env object)."""
    desc = pool.description
    return [
        Context(
            task=ep.info.get("task", ""),
            observation=ep.obs,
            admissible_actions=ep.info.get("admissible_actions"),
            history=ep.history,
            state_key=ep.info["state_key"],
            info=ep.info,
            env_id=pool.env_id,
            family=desc.family,
            episode=ep.slot,
            step=len(ep.traj.steps),
            expert_action=expert,
            action_space=desc.action_space,
        )
        for ep, expert in zip(episodes, experts)
    ]


def record_step(
    ep: Episode, ctx: Context, out: Turn, res: SlotResult, stats: dict[str, float]
) -> None:
    """Append the step `out` gave (or end the episode on an env failure)."""
    if res.error is not None:
        _fail(ep, res, stats)
        return
    info = res.info
    if info.get("error"):
        ep.traj.error = str(info["error"])
        ep.done = True
        stats["env_errors"] += 1
        return
    ep.traj.steps.append(
        Step(
            state_key=ctx.state_key,
            action=out.action,
            reward=float(res.reward),
            valid=bool(info.get("action_valid", True)) and out.format_ok,
            next_state_key=info["state_key"],
            observation=ctx.observation,
            admissible_actions=ctx.admissible_actions,
            text=out.text or out.action,
            terminated=res.terminated,
            truncated=res.truncated,
            info=info,
            prompt_ids=out.prompt_ids,
            response_ids=out.response_ids,
            sampler_logprobs=out.logprobs,
            spans=out.spans,
            extras=out.extras,
        )
    )
    ep.history.append((ctx.observation, out.action))
    ep.obs, ep.info = res.obs, info
    if res.terminated or res.truncated:
        ep.done = True
        ep.traj.won = bool(info.get("won", False))
        ep.traj.info = {"score": float(info.get("score", 0.0)), "truncated": res.truncated}


def assemble(
    pool: EnvPool, episodes: Sequence[Episode], seeds: Sequence[int]
) -> tuple[list[TrajectoryGroup], list[Trajectory]]:
    """Finished trajectories by group (in member order) and the errored ones, dropped."""
    groups = [TrajectoryGroup(task_id="", seed=int(seed), env_id=pool.env_id) for seed in seeds]
    dropped: list[Trajectory] = []
    lost = [0] * len(groups)
    for ep in episodes:
        if ep.traj.error is not None:
            dropped.append(ep.traj)
            lost[ep.group] += 1
            continue
        groups[ep.group].trajectories.append(ep.traj)
        groups[ep.group].task_id = ep.traj.task_id
    for b, group in enumerate(groups):
        if not keep_group(len(group.trajectories), lost[b]):
            dropped.extend(group.trajectories)
            group.trajectories = []
    return groups, dropped


def keep_group(remaining: int, lost: int) -> bool:
    """Whether a group that lost `lost` members to env errors trains on its `remaining` ones:
    a group that lost none is kept whatever its size; one that lost some needs >= 2 left."""
    return lost == 0 or remaining >= 2


def _check_expert(pool: EnvPool, agent: Agent) -> bool:
    """Whether the agent needs expert actions; refuses an env without an expert."""
    wants = "expert_action" in agent_needs(agent)
    if wants and not pool.description.has_expert:
        raise TypeError(
            f"{pool.env_id} has no expert: its env class must implement expert_action()"
        )
    return wants


@register_strategy("lockstep")
class LockstepStrategy(RolloutStrategy):
    """All running episodes advance together, one batched `agent.act` call per turn."""

    supports_async: ClassVar[bool] = True

    def collect(
        self,
        pool: EnvPool,
        agent: Agent,
        task_indices: Sequence[int],
        group_size: int,
        seeds: Sequence[int],
        on_turn: Callable[[int, int], None] | None = None,
    ) -> RolloutBatch:
        if len(seeds) != len(task_indices):
            raise ValueError("need one seed per task")
        pool.ensure(len(task_indices) * group_size)
        wants_expert = _check_expert(pool, agent)
        stats: dict[str, float] = defaultdict(float)
        t0 = time.perf_counter()
        episodes = start_episodes(pool, task_indices, group_size, seeds, stats)
        t_env, t_agent, turn = time.perf_counter() - t0, 0.0, 0
        while active := [ep for ep in episodes if not ep.done]:
            t0 = time.perf_counter()
            slots = [ep.slot for ep in active]
            experts = pool.expert_many(slots) if wants_expert else [None] * len(active)
            contexts = contexts_for(pool, active, experts)
            t_env += time.perf_counter() - t0
            t0 = time.perf_counter()
            turns = agent.act(contexts)
            t_agent += time.perf_counter() - t0
            if len(turns) != len(active):
                raise RuntimeError(f"agent returned {len(turns)} turns for {len(active)} contexts")
            t0 = time.perf_counter()
            results = pool.step_many([(ep.slot, out.action) for ep, out in zip(active, turns)])
            for ep, ctx, out, res in zip(active, contexts, turns, results):
                record_step(ep, ctx, out, res, stats)
            t_env += time.perf_counter() - t0
            turn += 1
            if on_turn is not None:
                on_turn(turn, len(active))
        groups, dropped = assemble(pool, episodes, seeds)
        timings = {"time_env_s": t_env, "time_agent_s": t_agent}
        stats.update(batch_stats(groups, dropped, turn, timings))
        emptied = sum(1 for g in groups if not g.trajectories)
        if emptied:  # groups left with < 2 members after env errors (absent when none)
            stats["dropped_groups"] = float(emptied)
        return RolloutBatch(groups=groups, stats=dict(stats), dropped=dropped)
