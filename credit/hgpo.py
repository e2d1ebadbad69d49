"""HGPO: Hierarchy-of-Groups Policy Optimization (arXiv 2602.22817).

GiGPO groups the steps of a group's trajectories by their current (anchor) state. HGPO builds a
hierarchy of such groups by how much recent context two steps share. For step t of trajectory i
with anchor states s_{i,0..t} and each k = 1..min(K + 1, t + 1):

    level-k group of (i, t) = every step (j, u) of the group with
                              (s_{j,u-k+1}, ..., s_{j,u}) == (s_{i,t-k+1}, ..., s_{i,t})
    a_k(i, t)  = norm_{(j,u) in that group}(Rhat_{j,u})      (groups of >= 2 members, else 0)

k = 1 is GiGPO's anchor group; larger k demands the same last k states. Equality is exact and
actions are not compared. Rhat_{i,t} = r_{i,t} + gamma Rhat_{i,t+1}, gamma = 0.95. The levels are
combined per step with adaptive weights: items with a_k == 0 are dropped, and

    w_k = (k + 1)^alpha / sum_{k' kept} (k' + 1)^alpha,     A_{i,t} = sum_{k kept} w_k a_k

(nothing kept gives 0; |a_k| <= 1e-9 counts as 0, the rounding residue of a tied group). The level-k
keys are the group's `TrajectoryGraph` paths (``path_ids(k)``), so k = 1 is the graph's node.
``base_group=True`` adds the episode advantage norm_{group}(R_i) as item k = 0 (weight 1^alpha
before normalising), normalised with the unbiased (sample, ddof = 1) std as the reference's
trajectory term is, whatever ``std`` says. The levels' std is the population std (ddof = 0), as
the reference; ``std="sample"`` is an option. Default mode ``mean_std_norm`` (the reference's
ALFWorld setting; its WebShop setting is ``mean_norm``: configs choose).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.credit.base import Advantages, CreditModule, NormOptions, group_normalize, register
from creditgym.credit.graph import batch_ids
from creditgym.credit.grpo import episode_advantages
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, batch_discounted_returns
from creditgym.credit.trajectory import TrajectoryGroup

#: |a_k| at or below this counts as 0 (rounding residue of a tied group).
ZERO_TOL = 1e-9


@dataclass(frozen=True)
class HGPOConfig(NormOptions):
    history: int = 2
    """K: the deepest level compares the last K + 1 anchor states (K = 0 is GiGPO's grouping)."""
    alpha: float = 1.0
    """Level weights w_k proportional to (k + 1)^alpha: larger alpha trusts deeper context more."""
    gamma: float = 0.95
    """Discount of the step returns Rhat normalised inside each group."""
    std: str = "population"
    """Which std the levels divide by: "population" (ddof=0, the reference) or "sample"."""
    base_group: bool = False
    """Add the episode-level advantage norm_{group}(R_i) (sample std) as level k = 0."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        super().check()
        if self.history < 0:
            raise ValueError(f"history (K) must be >= 0, got {self.history}")


def level_advantages(
    groups: Sequence[TrajectoryGroup], config: HGPOConfig
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """a_k for k = 1..K+1 (flat order) and each step's level-k group size (0: level absent).

    A step with t + 1 < k has no level-k item: its a_k is 0 and its size 0. The level-k keys
    are each group's `TrajectoryGraph.path_ids(k)`.
    """
    c = config
    rhat = batch_discounted_returns(groups, c.gamma, c.invalid_penalty)
    graphs = [g.graph() for g in groups]
    n = len(rhat)
    advs, sizes = [], []
    for k in range(1, c.history + 2):
        per_group = [gr.path_ids(k) for gr in graphs]
        present = np.concatenate(per_group) >= 0 if n else np.zeros(0, bool)
        key = batch_ids(per_group)  # absent steps: singletons, a_k = 0
        advs.append(group_normalize(rhat, key, c.mode, c.std))
        sizes.append(np.where(present, np.bincount(key)[key], 0) if n else np.zeros(0, np.int64))
    return advs, sizes


@register("hgpo")
class HGPO(CreditModule):
    """Adaptive-weighted step advantages over groups of equal recent context."""

    Config = HGPOConfig

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        advs, sizes = level_advantages(groups, c)
        items = list(advs)
        ks = list(range(1, len(advs) + 1))
        if c.base_group:
            items.insert(0, episode_advantages(groups, c.mode, "sample", c.invalid_penalty))
            ks.insert(0, 0)
        n = len(items[0]) if items else 0
        if n == 0:
            return Advantages(values=np.zeros(0))
        a = np.stack(items)  # (levels, steps)
        w = (np.asarray(ks, dtype=np.float64) + 1.0) ** c.alpha
        # A tied group's a_k is 0 up to rounding (x - mean of equal floats): drop those too.
        kept = np.abs(a) > ZERO_TOL
        weights = np.where(kept, w[:, None], 0.0)
        total = weights.sum(axis=0)
        values = np.where(total > 0, (weights * a).sum(axis=0) / np.where(total > 0, total, 1), 0)
        diagnostics: dict[str, float] = {}
        for k, size in enumerate(sizes, start=1):
            present = size > 0
            diagnostics[f"level{k}_group_size_mean"] = (
                float(size[present].mean()) if present.any() else 0.0
            )
            diagnostics[f"level{k}_nonsingleton_frac"] = float(np.mean(size > 1))
        diagnostics["levels_kept_mean"] = float(kept.sum(axis=0).mean())
        return Advantages(values=values, diagnostics=diagnostics)
