"""RLOO: REINFORCE leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024,
arXiv 2402.14740).

    A_i = R_i - mean_{j != i} R_j     for every step of trajectory i

A group of one trajectory gives 0 (no other sample to compare with). Equivalently
A_i = G / (G - 1) * (R_i - mean_j R_j), which is what `returns.leave_one_out` evaluates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.credit.base import Advantages, CreditModule, CreditOptions, register
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, episode_returns, leave_one_out
from creditgym.credit.trajectory import TrajectoryGroup


@dataclass(frozen=True)
class RLOOConfig(CreditOptions):
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""


@register("rloo")
class RLOO(CreditModule):
    """Leave-one-out episode advantages."""

    Config = RLOOConfig

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        returns, lengths, gids = episode_returns(groups, self.config.invalid_penalty)
        return Advantages(values=np.repeat(leave_one_out(returns, gids), lengths))
