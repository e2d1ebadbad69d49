"""Tree-GRPO: intra-tree plus inter-tree group-relative advantages (Ji et al. 2025, arXiv
2509.21240; reference code AMAP-ML/Tree-GRPO at 90b1709, ``verl/trainer/ppo/ray_trainer_ts.py``
``compute_advantage`` with ``adv_estimator="tree"``). Spec: shared/ALGORITHMS-2.md, "Tree-GRPO".

A group holds the K kept leaves of each of a task's M trees (the ``tree`` rollout strategy in
Tree-GRPO mode); ``Trajectory.tree_id`` names a leaf's tree. For leaf i with return R_i:

    A_i = (R_i - mean_tree) / (std_tree + 1e-6) + (R_i - mean_task) / (std_task + 1e-6)

over the leaves of i's tree and over all leaves of the task's trees, with the sample std
(``torch.std``). ``variant="tree_inner"`` keeps the intra term only. Every step of a leaf gets
its A (``shared_prefix="duplicate"``, the reference: a prefix turn shared by several leaves is
trained once per leaf, so the gradient on a node is the sum of its leaves' A).
``shared_prefix="mean"`` (**[recon]**) trains each node once: its first copy gets the mean A over
the leaves holding it and ``Advantages.weight`` = that leaf count; the other copies are masked.

Deviations: the reference gives a group of one mean 0 and std 1 (A = raw R); we keep "a set of
one element gives 0" and log ``singleton_trees``. A trajectory without ``tree_id`` is a tree of
its own (so on a plain group the method is GRPO with sample std). Observation tokens are never
trained here (the learner trains response tokens only), as the reference's ``state_masking``.
The paper body was not available: equations from the reference code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.credit.base import (
    Advantages,
    CreditModule,
    NormOptions,
    check_choice,
    normalize,
    register,
)
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY
from creditgym.credit.trajectory import TrajectoryGroup

VARIANTS = ("tree", "tree_inner")
SHARED_PREFIX = ("duplicate", "mean")


@dataclass(frozen=True)
class TreeGRPOConfig(NormOptions):
    variant: str = "tree"
    """"tree": intra + inter; "tree_inner": intra-tree only."""
    shared_prefix: str = "duplicate"
    """"duplicate" (reference): each leaf's copy of a shared prefix step is trained with the
    leaf's A; "mean": one sample per node, A = mean over its leaves, weight = leaf count."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        super().check()
        check_choice("variant", self.variant, VARIANTS)
        check_choice("shared_prefix", self.shared_prefix, SHARED_PREFIX)


def leaf_advantages(group: TrajectoryGroup, config: TreeGRPOConfig) -> tuple[np.ndarray, int]:
    """A per leaf of one group and the number of single-leaf trees."""
    returns = np.array([t.episode_return(config.invalid_penalty) for t in group], dtype=np.float64)
    trees: dict[object, list[int]] = defaultdict(list)
    for i, t in enumerate(group.trajectories):
        trees[t.tree_id if t.tree_id is not None else ("own", i)].append(i)
    intra = np.zeros_like(returns)
    for members in trees.values():
        intra[members] = normalize(returns[members], config.mode, config.std)
    singletons = sum(len(m) == 1 for m in trees.values())
    if config.variant == "tree_inner":
        return intra, singletons
    return intra + normalize(returns, config.mode, config.std), singletons


@register("tree_grpo")
class TreeGRPO(CreditModule):
    """Tree-GRPO's intra-tree + inter-tree advantages on tree-rollout leaves."""

    Config = TreeGRPOConfig
    needs = frozenset({"branching"})

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        values, mask, weight = [], [], []
        singletons = 0
        for g in groups:
            leaf, n1 = leaf_advantages(g, c)
            singletons += n1
            if c.shared_prefix == "duplicate":
                for a, t in zip(leaf, g.trajectories):
                    values.extend([float(a)] * len(t))
                    mask.extend([True] * len(t))
                    weight.extend([1.0] * len(t))
                continue
            holders: dict[str, list[float]] = defaultdict(list)
            for a, t in zip(leaf, g.trajectories):
                for s in t.steps:
                    if s.node_id is not None:
                        holders[s.node_id].append(float(a))
            seen: set[str] = set()
            for a, t in zip(leaf, g.trajectories):
                for s in t.steps:
                    if s.node_id is None:
                        values.append(float(a)), mask.append(True), weight.append(1.0)
                        continue
                    first = s.node_id not in seen
                    seen.add(s.node_id)
                    values.append(float(np.mean(holders[s.node_id])))
                    mask.append(first)
                    weight.append(float(len(holders[s.node_id])))
        has_mean = c.shared_prefix == "mean"
        return Advantages(
            values=np.asarray(values, dtype=np.float64),
            mask=np.asarray(mask, dtype=bool) if has_mean else None,
            weight=np.asarray(weight, dtype=np.float64) if has_mean else None,
            diagnostics={"singleton_trees": float(singletons)},
        )
