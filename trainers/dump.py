"""The trajectory dump: one JSON row per step in ``<run>/trajectories/iter_<k>.jsonl``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from creditgym.credit.trajectory import TrajectoryGroup

__all__ = ["trajectory_rows"]


def trajectory_rows(
    iteration: int, groups: Sequence[TrajectoryGroup], advantages: np.ndarray | None
) -> list[dict[str, Any]]:
    """One JSON row per step, in the (group, trajectory, step) order of the advantages."""
    rows = []
    pos = 0
    for gi, group in enumerate(groups):
        for ti, traj in enumerate(group.trajectories):
            for si, step in enumerate(traj.steps):
                adv = None if advantages is None else float(advantages[pos])
                pos += 1
                rows.append(
                    {
                        "iteration": iteration,
                        "group": gi,
                        "trajectory": ti,
                        "step": si,
                        "task_id": traj.task_id,
                        "task_type": traj.task_type,
                        "seed": traj.seed,
                        "state_key": step.state_key,
                        "observation": step.observation,
                        "text": step.text,
                        "action": step.action,
                        "valid": step.valid,
                        "reward": step.reward,
                        "next_state_key": step.next_state_key,
                        "terminated": step.terminated,
                        "truncated": step.truncated,
                        "won": traj.won,
                        "advantage": adv,
                        "response_tokens": len(step.response_ids or ()),
                        "prompt_tokens": len(step.prompt_ids or ()),
                    }
                )
    return rows
