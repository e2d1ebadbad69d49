"""GRPO: group-relative episode advantages (Shao et al. 2024, arXiv 2402.03300; multi-turn form
as in verl-agent).

    A_{i,t} = norm_{j in group}(R_j)   for every step t of trajectory i

with R_i = sum_t r_{i,t} (env reward minus the invalid-action penalty). ``norm`` is
``mean_std_norm`` (x - mean) / (std + 1e-6) by default, or ``mean_norm`` (x - mean). The std is the
sample std (ddof = 1), as ``torch.std`` in the reference implementations; ``std="population"``
is an option. ``per_step_rows=True`` reproduces verl-agent, which normalises over every step row
of the group, so long trajectories weigh more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.credit.base import (
    NORM_MODES,
    STD_MODES,
    Advantages,
    CreditModule,
    check_choice,
    group_normalize,
    register,
)
from creditgym.credit.trajectory import DEFAULT_INVALID_PENALTY, TrajectoryGroup


@dataclass(frozen=True)
class GRPOConfig:
    mode: str = "mean_std_norm"
    """Normalisation: "mean_std_norm" (GRPO) or "mean_norm" (Dr. GRPO-style, no std)."""
    std: str = "sample"
    """Which std divides: "sample" (ddof=1, as torch.std) or "population" (ddof=0)."""
    per_step_rows: bool = False
    """Normalise over all step rows of the group (verl-agent) instead of over trajectories."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""


def episode_advantages(
    groups: Sequence[TrajectoryGroup],
    mode: str,
    std: str,
    invalid_penalty: float,
    per_step_rows: bool = False,
) -> np.ndarray:
    """norm over each group of the episode returns, broadcast to every step (flat order)."""
    returns, lengths, gids = [], [], []
    for gi, g in enumerate(groups):
        for traj in g.trajectories:
            returns.append(traj.episode_return(invalid_penalty))
            lengths.append(len(traj))
            gids.append(gi)
    returns_arr = np.asarray(returns, dtype=np.float64)
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    gids_arr = np.asarray(gids, dtype=np.int64)
    if per_step_rows:
        rows = np.repeat(returns_arr, lengths_arr)
        return group_normalize(rows, np.repeat(gids_arr, lengths_arr), mode, std)
    per_traj = group_normalize(returns_arr, gids_arr, mode, std) if len(returns) else returns_arr
    return np.repeat(per_traj, lengths_arr)


@register("grpo")
class GRPO(CreditModule):
    """Episode-level group-relative advantages."""

    Config = GRPOConfig

    def validate(self) -> None:
        check_choice("mode", self.config.mode, NORM_MODES)
        check_choice("std", self.config.std, STD_MODES)

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        values = episode_advantages(groups, c.mode, c.std, c.invalid_penalty, c.per_step_rows)
        return Advantages(values=values)
