"""Evaluation of a policy on a fixed slice of a task panel: success per task type.

Evaluation uses the same lock-step rollout as training, one episode per task (group size 1), on
the first ``n`` tasks of the panel with fixed reset seeds, so every evaluation of a run (and of
any other run on the same panel hash) sees exactly the same tasks.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from creditgym.agents.base import Agent
from creditgym.trainers.rollout import EnvPool, collect

__all__ = ["evaluate_policy"]


def evaluate_policy(
    agent: Agent, pool: EnvPool, num_tasks: int, seed: int = 1234
) -> dict[str, Any]:
    """Run one episode on each of the first ``num_tasks`` tasks of ``pool``'s panel.

    Returns flat metrics: ``success``, ``success/<task type>``, ``mean_return``,
    ``invalid_rate``, ``mean_length``, ``episodes``, ``dropped``, ``seconds`` and the panel hash,
    plus ``per_task`` (task id -> won) for reports.
    """
    panel = pool.panel
    n = min(int(num_tasks), len(panel))
    if n < 1:
        raise ValueError(f"evaluation needs at least one task; the panel has {len(panel)}")
    t0 = time.perf_counter()
    batch = collect(pool, agent, list(range(n)), 1, [seed + i for i in range(n)])
    trajs = [t for g in batch.groups for t in g.trajectories]
    by_type: dict[str, list[float]] = defaultdict(list)
    for t in trajs:
        by_type[t.task_type].append(float(t.won))
    out: dict[str, Any] = {
        "success": sum(t.won for t in trajs) / max(len(trajs), 1),
        "mean_return": batch.stats.get("mean_return", 0.0),
        "invalid_rate": batch.stats.get("invalid_rate", 0.0),
        "mean_length": batch.stats.get("mean_length", 0.0),
        "episodes": float(len(trajs)),
        "dropped": float(len(batch.dropped)),
        "seconds": time.perf_counter() - t0,
    }
    for task_type, wins in sorted(by_type.items()):
        out[f"success/{task_type}"] = sum(wins) / len(wins)
    out["panel_hash"] = panel.hash
    out["per_task"] = {t.task_id: bool(t.won) for t in trajs}
    return out
