"""SALT: step-level advantages from a trajectory graph (arXiv 2510.20022).

The paper's idea: merge the steps of a group's trajectories into a graph. A step that winning and
losing trajectories share is neutral; a step that only some trajectories take is decisive. With a
base advantage A_j per trajectory (GRPO or RLOO over the group):

    A_{i,t} = mean_{j in traj(node(i, t))} A_j

where traj(n) is the set of trajectories of the group whose path contains node n. A step taken by
every trajectory of the group gets the group mean of A (0 for GRPO and RLOO); a step only
trajectory i takes keeps A_i.

The paper has no public code; these are our reconstruction choices:

- The node of a step is its edge id (state_key before, action) in the group's `TrajectoryGraph`
  (``graph.edge``; edges that led to different next states merge). ``key="prefix"`` uses the
  graph's prefix id (s_0, a_0, ..., s_t, a_t) instead (``graph.prefix_ids()``): a trie, where two
  steps share a node only if their trajectories agree up to and including that step.
- traj(n) is a set: a trajectory that takes the same edge twice counts once, so the average is
  over trajectories, not visits.
- The mean is unweighted; steps with invalid actions are nodes like any other (their penalty is
  in the base advantage through the return).
- Nodes never span groups (different tasks).
- No extra model pass and no discounting: the signal comes only from the base advantages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.credit.base import (
    Advantages,
    CreditModule,
    NormOptions,
    check_choice,
    group_normalize,
    register,
)
from creditgym.credit.graph import batch_ids
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, episode_returns, leave_one_out
from creditgym.credit.trajectory import TrajectoryGroup

BASES = ("grpo", "rloo")
KEYS = ("edge", "prefix")


@dataclass(frozen=True)
class SALTConfig(NormOptions):
    base: str = "grpo"
    """Trajectory-level base advantage: "grpo" (normalised return) or "rloo" (leave-one-out)."""
    key: str = "edge"
    """Node of a step: "edge" = (state before, action); "prefix" = the whole history prefix."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        super().check()  # mode and std: the GRPO base's normalisation (ignored for RLOO)
        check_choice("base", self.base, BASES)
        check_choice("key", self.key, KEYS)


def base_advantages(groups: Sequence[TrajectoryGroup], config: SALTConfig) -> np.ndarray:
    """A_j for every trajectory j of the batch (GRPO or RLOO over its group)."""
    returns, _, gids = episode_returns(groups, config.invalid_penalty)
    if config.base == "rloo":
        return leave_one_out(returns, gids)
    return group_normalize(returns, gids, config.mode, config.std)


def step_nodes(groups: Sequence[TrajectoryGroup], key: str) -> np.ndarray:
    """Node id of every step (flat order), read from each group's `TrajectoryGraph` (its edge
    ids, or its prefix ids for ``key="prefix"``); ids never repeat across groups."""
    graphs = [g.graph() for g in groups]
    if key == "edge":
        return batch_ids([gr.edge for gr in graphs])
    return batch_ids([gr.prefix_ids() for gr in graphs])


@register("salt")
class SALT(CreditModule):
    """Step advantages as the mean trajectory advantage over the trajectories through a node."""

    Config = SALTConfig

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        traj_adv = base_advantages(groups, self.config)
        lengths = np.array([len(t) for g in groups for t in g.trajectories], dtype=np.int64)
        if lengths.sum() == 0:
            return Advantages(values=np.zeros(0))
        traj_of_step = np.repeat(np.arange(len(lengths)), lengths)
        nodes = step_nodes(groups, self.config.key)
        n_nodes = int(nodes.max()) + 1
        # traj(n) is a set: each (node, trajectory) pair counts once, however often it recurs.
        pairs = np.unique(nodes * len(lengths) + traj_of_step)
        pair_node, pair_traj = pairs // len(lengths), pairs % len(lengths)
        count = np.bincount(pair_node, minlength=n_nodes).astype(np.float64)
        total = np.bincount(pair_node, weights=traj_adv[pair_traj], minlength=n_nodes)
        values = (total / np.maximum(count, 1.0))[nodes]
        # Nodes shared by trajectories with different base advantages (winners and losers).
        sq = np.bincount(pair_node, weights=traj_adv[pair_traj] ** 2, minlength=n_nodes)
        spread = sq / np.maximum(count, 1.0) - (total / np.maximum(count, 1.0)) ** 2
        mult = count[nodes]
        diagnostics = {
            "node_multiplicity_mean": float(mult.mean()),
            "shared_step_frac": float(np.mean(mult > 1)),
            "mixed_step_frac": float(np.mean(spread[nodes] > 1e-12)),
            "nodes": float(n_nodes),
        }
        return Advantages(values=values, diagnostics=diagnostics)
