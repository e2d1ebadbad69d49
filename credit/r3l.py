"""R^3L: reflect-then-retry credit with pivotal masking and positive amplification (arXiv
2601.03715; reference code shiweijiezero/R3L at d503f6c on Trinity-RFT,
``trinity/algorithm/advantage_fn/opmd_advantage.py`` ``OPMDReweightAdvGroupAdvantage`` and the
workflow's ``_adjust_action_mask_for_retry``). Spec: shared/ALGORITHMS-2.md, "R^3L".

A group holds one task's base rollouts (``role="base"``) and their retries in distilled form
(``role="retry"``: guidance removed from the prompts), each retry sharing ``pair_id`` with its
base and carrying ``pivot`` = k, the step it restarted from. With r~_i = R_i / ``r_max`` over the
base and distilled-retry members of the group:

    s_i = r~_i - mean_group r~          (no std)
    A_i = alpha        if trajectory i was won ("max reward"; ``max_reward_adv="alpha"``, the
                       paper's Eq. 11 as corrected in the rebuttal; 1.0 in the code)
    A_i = alpha s_i    if s_i >= 0
    A_i = s_i          if s_i < 0          alpha = 3

Pivotal credit: the first k steps of a retry with pivot k, and of its base, are masked out of
the loss (``Advantages.mask``: not just A = 0, so KL/entropy terms skip them too). Learn-to-
reflect / learn-to-retry samples (``role="reflection"`` and ``"retry_guided"``) are single-member
groups with A = ``sft_advantage`` (1.0, the reference); a guided retry's copied prefix is masked
like its distilled twin. ``role="mc"`` trajectories are masked (never trained on). The policy
loss is the registered ``opmd`` (-A log pi / (1 + tau), no ratio, no clip;
`creditgym.trainers.losses`).

Deviations: r~ = R / R_max and "max reward" = ``won`` (the reference tests r >= 1.0 on its own
reward scale); a group whose members are all won gets A = alpha for all (as the reference, where
they get 1.0): tied groups are not zero here. Whether the reference's small k2 KL (0.001) was on
in the paper's runs is unverified (ALGORITHMS-2.md, "Not verified / open").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.credit.base import Advantages, CreditModule, CreditOptions, register
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY
from creditgym.credit.trajectory import ROLES, TrajectoryGroup

GROUP_ROLES = ("base", "retry", "replayed")
SINGLE_ROLES = ("reflection", "retry_guided")


@dataclass(frozen=True)
class R3LConfig(CreditOptions):
    alpha: float = 3.0
    """Positive amplification factor (paper and code: 3.0)."""
    max_reward_adv: Any = "alpha"
    """A of a won trajectory: "alpha" (paper Eq. 11, corrected) or a number (code: 1.0)."""
    r_max: float = 10.0
    """The env's maximum return: r~ = R / r_max (10 for ALFWorld, WebShop, KeyRooms)."""
    sft_advantage: float = 1.0
    """A of the single-member learn-to-reflect / learn-to-retry samples (reference: 1.0)."""
    pivotal_mask: bool = True
    """Mask the first ``pivot`` steps of every retry and of its base."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        super().check()
        if self.max_reward_adv != "alpha" and not isinstance(self.max_reward_adv, (int, float)):
            raise ValueError(
                f"max_reward_adv={self.max_reward_adv!r} must be 'alpha' or a number (code: 1.0)"
            )
        if self.r_max <= 0:
            raise ValueError(f"r_max={self.r_max!r} must be > 0")
        if self.alpha <= 0:
            raise ValueError(f"alpha={self.alpha!r} must be > 0")


def amplified(s: np.ndarray, won: np.ndarray, alpha: float, max_adv: float) -> np.ndarray:
    """Positive amplification of centred scores ``s`` (won members get ``max_adv``)."""
    out = np.where(s >= 0, alpha * s, s)
    return np.where(won, max_adv, out)


@register("r3l")
class R3L(CreditModule):
    """R^3L's amplified group-centred advantages with pivotal masking of retry prefixes."""

    Config = R3LConfig
    needs = frozenset({"branching"})

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        max_adv = c.alpha if c.max_reward_adv == "alpha" else float(c.max_reward_adv)
        values, mask = [], []
        retries = 0
        for g in groups:
            for t in g.trajectories:
                if t.role not in ROLES:
                    raise ValueError(f"trajectory role {t.role!r} is not one of {list(ROLES)}")
            members = [i for i, t in enumerate(g.trajectories) if t.role in GROUP_ROLES]
            adv = np.zeros(len(g), dtype=np.float64)
            if len(members) > 1:
                r = np.array([g.trajectories[i].episode_return(c.invalid_penalty) for i in members])
                won = np.array([g.trajectories[i].won for i in members], dtype=bool)
                s = r / c.r_max - (r / c.r_max).mean()
                adv[members] = amplified(s, won, c.alpha, max_adv)
            # Pivots of each pair: the base is masked up to the largest pivot of its retries.
            pivots: dict[str, int] = {}
            for t in g.trajectories:
                if t.pivot is not None and t.pair_id is not None and t.role != "base":
                    pivots[t.pair_id] = max(pivots.get(t.pair_id, 0), int(t.pivot))
                    retries += t.role == "retry"
            for i, t in enumerate(g.trajectories):
                a = c.sft_advantage if t.role in SINGLE_ROLES else adv[i]
                k = 0
                if c.pivotal_mask:
                    if t.role == "base" and t.pair_id in pivots:
                        k = pivots[t.pair_id]
                    elif t.role != "base" and t.pivot is not None:
                        k = int(t.pivot)
                for step_index in range(len(t)):
                    values.append(float(a))
                    mask.append(t.role != "mc" and step_index >= k)
        mask_a = np.asarray(mask, dtype=bool)
        return Advantages(
            values=np.asarray(values, dtype=np.float64),
            mask=None if mask_a.all() else mask_a,
            diagnostics={"retries": float(retries), "masked_steps": float(np.sum(~mask_a))},
        )
