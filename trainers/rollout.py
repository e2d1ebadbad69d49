"""Rollout collection: B tasks x G trajectories on an env pool, by a named strategy.

`collect` plays ``len(task_indices)`` groups of ``group_size`` episodes on an `EnvPool`
(`creditgym.trainers.shards`) with the strategy named by ``strategy`` (default ``"lockstep"``,
`creditgym.trainers.strategies`): all G members of a group reset with the same task and seed,
finished episodes never act, and an env failure ends, counts and drops its episode (the shard
rebuilds the env), so nothing is ever trained on a broken episode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from creditgym.agents.base import Agent
from creditgym.trainers import strategies
from creditgym.trainers.shards import EnvPool
from creditgym.trainers.strategies import RolloutBatch

__all__ = ["EnvPool", "RolloutBatch", "collect"]


def collect(
    pool: EnvPool,
    agent: Agent,
    task_indices: Sequence[int],
    group_size: int,
    seeds: Sequence[int],
    on_turn: Callable[[int, int], None] | None = None,
    strategy: str | strategies.RolloutStrategy = "lockstep",
) -> RolloutBatch:
    """Roll out ``len(task_indices)`` groups of ``group_size`` episodes.

    ``task_indices[b]`` is an index into the pool's panel and ``seeds[b]`` the reset seed shared
    by group b. ``on_turn(turn, active)`` is called after every turn (progress display).
    `strategy` is a registered strategy name or a strategy object.
    """
    if isinstance(strategy, str):
        strategy = strategies.make(strategy)
    return strategy.collect(pool, agent, task_indices, group_size, seeds, on_turn=on_turn)
