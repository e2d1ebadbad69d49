"""Stratified GRPO (arXiv 2510.06214; no official code; blend side from the third-party
grpo-composer ``StratifiedAdvantageFunction``).

Inside each group, trajectories are split into strata by a structural key (the paper: the number
of search calls). Stratified advantage normalisation (SAN) normalises each return inside its
stratum, the global estimator (GN) over the whole group, and the two are blended:

    A_SAN(i) = (R_i - mean_{B_k} R) / (std_{B_k} R + eps),   i in stratum B_k
    A_GN(i)  = (R_i - mean_group R) / (std_group R + eps)
    A(i)     = alpha A_SAN(i) + (1 - alpha) A_GN(i)          for every step of trajectory i

alpha = 0.6 (1 = pure SAN). A stratum of one trajectory gives A_SAN = 0. Strata: ``stratum =
"auto"`` counts search/tool calls in search and tool envs (a step whose action starts with
``<search>`` or ``<tool``) and uses the number of steps elsewhere; "num_search_calls" and
"num_steps" force one; a callable ``f(Trajectory) -> key`` gives any other partition. std: the
sample std (ddof 1), ``std="population"`` as an option; ``mode="mean_norm"`` drops the division.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.credit.base import (
    Advantages,
    CreditModule,
    NormOptions,
    dense_ids,
    group_normalize,
    register,
)
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, episode_returns
from creditgym.credit.trajectory import Trajectory, TrajectoryGroup

STRATA = ("auto", "num_search_calls", "num_steps")


def num_search_calls(traj: Trajectory) -> int:
    """Search or tool calls of a trajectory (actions starting with ``<search>`` or ``<tool``)."""
    return sum(1 for s in traj.steps if s.action.lstrip().startswith(("<search>", "<tool")))


def _is_search_env(group: TrajectoryGroup) -> bool:
    env = group.env_id.lower()
    return "search" in env or "tooluse" in env


@dataclass(frozen=True)
class StratifiedGRPOConfig(NormOptions):
    alpha: float = 0.6
    """Weight of the stratified estimator (1 = pure SAN, 0 = GRPO)."""
    stratum: Any = "auto"
    """"auto", "num_search_calls", "num_steps" or a callable Trajectory -> hashable key."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not callable(self.stratum) and self.stratum not in STRATA:
            raise ValueError(
                f"stratum={self.stratum!r} is not valid; choose one of {list(STRATA)} or a callable"
            )


def stratum_keys(groups: Sequence[TrajectoryGroup], stratum: str | Callable) -> list[Any]:
    """(group index, stratum key) of every trajectory, flat order."""
    keys = []
    for gi, g in enumerate(groups):
        mode = stratum
        if mode == "auto":
            mode = "num_search_calls" if _is_search_env(g) else "num_steps"
        for t in g.trajectories:
            if callable(mode):
                k = mode(t)
            elif mode == "num_search_calls":
                k = num_search_calls(t)
            else:
                k = len(t.steps)
            keys.append((gi, k))
    return keys


@register("stratified_grpo")
class StratifiedGRPO(CreditModule):
    """Blend of stratum-normalised and group-normalised episode returns (module docstring)."""

    Config = StratifiedGRPOConfig

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        returns, lengths, gids = episode_returns(groups, c.invalid_penalty)
        sids = dense_ids(stratum_keys(groups, c.stratum))
        san = group_normalize(returns, sids, c.mode, c.std)
        gn = group_normalize(returns, gids, c.mode, c.std)
        traj = c.alpha * san + (1.0 - c.alpha) * gn
        n_strata = len(set(sids.tolist()))
        return Advantages(
            values=np.repeat(traj, lengths),
            diagnostics={"strata_per_group": n_strata / max(len(groups), 1)},
        )
