"""The return primitives every credit module shares: discounted returns, GAE, leave-one-out.

The step reward r_t is `Step.penalized_reward` (the env reward minus the invalid-action penalty),
so the penalty is applied in exactly one place. Everything here is a pure function of arrays or
recorded trajectories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from creditgym.credit.trajectory import Trajectory, TrajectoryGroup

#: Subtracted from a step's reward when its action was invalid (ALGORITHMS.md); the one default
#: every module's ``invalid_penalty`` option and `summary_diagnostics` use.
DEFAULT_INVALID_PENALTY = 0.1


def discounted_returns(rewards: Sequence[float] | np.ndarray, gamma: float) -> np.ndarray:
    """Rhat_t = r_t + gamma Rhat_{t+1} (Rhat_T = 0), one backward pass over one sequence."""
    values = np.asarray(rewards, dtype=np.float64).tolist()
    out = [0.0] * len(values)
    acc = 0.0
    for t in range(len(values) - 1, -1, -1):
        acc = values[t] + gamma * acc
        out[t] = acc
    return np.array(out, dtype=np.float64)


def step_rewards(
    groups: Sequence[TrajectoryGroup], invalid_penalty: float = DEFAULT_INVALID_PENALTY
) -> np.ndarray:
    """r_t of every step of the batch, flat in (group, trajectory, step) order."""
    return np.array(
        [s.penalized_reward(invalid_penalty) for g in groups for t in g for s in t.steps],
        dtype=np.float64,
    )


def batch_discounted_returns(
    groups: Sequence[TrajectoryGroup],
    gamma: float,
    invalid_penalty: float = DEFAULT_INVALID_PENALTY,
) -> np.ndarray:
    """Rhat_t of every step of the batch (flat order), each trajectory discounted on its own."""
    out: list[float] = []
    for g in groups:
        for traj in g.trajectories:
            r = [s.penalized_reward(invalid_penalty) for s in traj.steps]
            acc = 0.0
            for t in range(len(r) - 1, -1, -1):
                acc = r[t] + gamma * acc
                r[t] = acc
            out.extend(r)
    return np.array(out, dtype=np.float64)


def episode_returns(
    groups: Sequence[TrajectoryGroup], invalid_penalty: float = DEFAULT_INVALID_PENALTY
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R_i of every trajectory of the batch, its length and its group index (three arrays)."""
    returns, lengths, gids = [], [], []
    for gi, g in enumerate(groups):
        for traj in g.trajectories:
            returns.append(traj.episode_return(invalid_penalty))
            lengths.append(len(traj))
            gids.append(gi)
    return (
        np.asarray(returns, dtype=np.float64),
        np.asarray(lengths, dtype=np.int64),
        np.asarray(gids, dtype=np.int64),
    )


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    discounts: np.ndarray | float,
    lam: float,
) -> np.ndarray:
    """Generalised advantage estimation over one sequence (Schulman et al. 2016).

    delta_t = r_t + d_t V'_t - V_t and A_t = delta_t + d_t lam A_{t+1}, where V'_t =
    ``next_values[t]`` (the bootstrap of the last element included) and d_t = ``discounts[t]``
    (gamma for steps; gamma^{duration} for HiPER's segments).
    """
    n = len(rewards)
    d = np.broadcast_to(np.asarray(discounts, dtype=np.float64), (n,))
    delta = (np.asarray(rewards, np.float64) + d * next_values - values).tolist()
    dl = (d * lam).tolist()
    out = [0.0] * n
    acc = 0.0
    for t in range(n - 1, -1, -1):
        acc = delta[t] + dl[t] * acc
        out[t] = acc
    return np.array(out, dtype=np.float64)


def leave_one_out(returns: np.ndarray, group_ids: np.ndarray | None = None) -> np.ndarray:
    """R_i - mean_{j != i} R_j inside each group (= G / (G - 1) (R_i - mean_j R_j)).

    ``group_ids`` are dense integers, one per entry (None: one group). A group of one gives 0.
    """
    x = np.asarray(returns, dtype=np.float64)
    ids = np.zeros(len(x), np.int64) if group_ids is None else np.asarray(group_ids, np.int64)
    if x.size == 0:
        return x.copy()
    counts = np.bincount(ids).astype(np.float64)
    means = np.bincount(ids, weights=x) / np.maximum(counts, 1)
    n = counts[ids]
    return np.where(n > 1, n / np.maximum(n - 1, 1) * (x - means[ids]), 0.0)


def trajectory_returns(
    traj: Trajectory, gamma: float, invalid_penalty: float = DEFAULT_INVALID_PENALTY
) -> np.ndarray:
    """Rhat_t of one trajectory."""
    return discounted_returns(traj.rewards(invalid_penalty), gamma)
