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

from creditgym.credit.base import Advantages, CreditModule, NormOptions, group_normalize, register
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, episode_returns
from creditgym.credit.trajectory import TrajectoryGroup


@dataclass(frozen=True)
class GRPOConfig(NormOptions):
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
    """norm over each group of the episode returns, broadcast to every step (flat order).

    ``per_step_rows``: normalise over every step row of the group (each trajectory's return
    repeated once per step), as verl-agent does.
    """
    returns, lengths, gids = episode_returns(groups, invalid_penalty)
    if per_step_rows:
        rows = np.repeat(returns, lengths)
        return group_normalize(rows, np.repeat(gids, lengths), mode, std)
    return np.repeat(group_normalize(returns, gids, mode, std), lengths)


@register("grpo")
class GRPO(CreditModule):
    """Episode-level group-relative advantages."""

    Config = GRPOConfig

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        values = episode_advantages(groups, c.mode, c.std, c.invalid_penalty, c.per_step_rows)
        return Advantages(values=values)
