"""RLOO: REINFORCE leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024,
arXiv 2402.14740).

    A_i = R_i - mean_{j != i} R_j     for every step of trajectory i

A group of one trajectory gives 0 (no other sample to compare with). Equivalently
A_i = G / (G - 1) * (R_i - mean_j R_j), which is what `compute` evaluates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.credit.base import Advantages, CreditModule, register
from creditgym.credit.trajectory import DEFAULT_INVALID_PENALTY, TrajectoryGroup


@dataclass(frozen=True)
class RLOOConfig:
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""


@register("rloo")
class RLOO(CreditModule):
    """Leave-one-out episode advantages."""

    Config = RLOOConfig

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        out = []
        for g in groups:
            returns = np.array(
                [t.episode_return(self.config.invalid_penalty) for t in g.trajectories]
            )
            n = len(returns)
            adv = np.zeros(n) if n <= 1 else n / (n - 1) * (returns - returns.mean())
            for a, t in zip(adv, g.trajectories):
                out.append(np.full(len(t), a))
        values = np.concatenate(out) if out else np.zeros(0)
        return Advantages(values=values)
