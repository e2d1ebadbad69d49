"""SALT: step-level advantages from a trajectory graph (arXiv 2510.20022).

The paper's idea: merge the steps of a group's trajectories into a graph. A step that winning and
losing trajectories share is neutral; a step that only some trajectories take is decisive. With a
base advantage A_j per trajectory (GRPO or RLOO over the group):

    A_{i,t} = mean_{j in traj(node(i, t))} A_j

where traj(n) is the set of trajectories of the group whose path contains node n. A step taken by
every trajectory of the group gets the group mean of A (0 for GRPO and RLOO); a step only
trajectory i takes keeps A_i.

The paper has no public code; these are our reconstruction choices:

- The node of a step is its edge (state_key before, action) in the group's `TrajectoryGraph`,
  i.e. a key of `action_occurrences` (edges that led to different next states merge).
  ``key="prefix"`` uses the whole history prefix (s_0, a_0, ..., s_t, a_t) instead: a trie, where
  two steps share a node only if their trajectories agree up to and including that step.
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
    NORM_MODES,
    STD_MODES,
    Advantages,
    CreditModule,
    check_choice,
    dense_ids,
    normalize,
    register,
)
from creditgym.credit.trajectory import DEFAULT_INVALID_PENALTY, TrajectoryGroup

BASES = ("grpo", "rloo")
KEYS = ("edge", "prefix")


@dataclass(frozen=True)
class SALTConfig:
    base: str = "grpo"
    """Trajectory-level base advantage: "grpo" (normalised return) or "rloo" (leave-one-out)."""
    key: str = "edge"
    """Node of a step: "edge" = (state before, action); "prefix" = the whole history prefix."""
    mode: str = "mean_std_norm"
    """GRPO base normalisation: "mean_std_norm" or "mean_norm" (ignored for RLOO)."""
    std: str = "sample"
    """GRPO base std: "sample" (ddof=1, as torch.std) or "population" (ddof=0)."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""


def base_advantages(group: TrajectoryGroup, config: SALTConfig) -> np.ndarray:
    """A_j for every trajectory j of the group (GRPO or RLOO)."""
    returns = np.array([t.episode_return(config.invalid_penalty) for t in group.trajectories])
    n = len(returns)
    if n <= 1:
        return np.zeros(n)
    if config.base == "rloo":
        return n / (n - 1) * (returns - returns.mean())
    return normalize(returns, config.mode, config.std)


def step_nodes(groups: Sequence[TrajectoryGroup], key: str) -> np.ndarray:
    """Dense node id of every step (flat order); ids never repeat across groups.

    For ``key="edge"`` the nodes are exactly the keys of each group's
    ``TrajectoryGraph.action_occurrences()`` ((state, action) pairs); they are read straight from
    the steps so the module does not pay for building the networkx graph.
    """
    if key == "edge":
        return dense_ids(
            [(gi, s.state_key, s.action) for gi, g in enumerate(groups) for t in g for s in t.steps]
        )
    trie: dict[tuple[int, str, str], int] = {}
    out: list[int] = []
    for gi, g in enumerate(groups):
        for traj in g.trajectories:
            parent = -1 - gi  # one root per group
            for step in traj.steps:
                parent = trie.setdefault((parent, step.state_key, step.action), len(trie))
                out.append(parent)
    return np.asarray(out, dtype=np.int64)


@register("salt")
class SALT(CreditModule):
    """Step advantages as the mean trajectory advantage over the trajectories through a node."""

    Config = SALTConfig

    def validate(self) -> None:
        c = self.config
        check_choice("base", c.base, BASES)
        check_choice("key", c.key, KEYS)
        check_choice("mode", c.mode, NORM_MODES)
        check_choice("std", c.std, STD_MODES)

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        base = [base_advantages(g, self.config) for g in groups]
        lengths = np.array([len(t) for g in groups for t in g.trajectories], dtype=np.int64)
        if lengths.sum() == 0:
            return Advantages(values=np.zeros(0))
        traj_adv = np.concatenate(base)
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
