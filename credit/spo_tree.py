"""SPO-tree: edge advantages V(n) - V(parent) on a tree of rollouts (Segment Policy Optimization,
Guo et al. 2025, arXiv 2505.23564; reference code AIFrameResearch/SPO at b9fc6a2,
``hybrid_inference_strategy.py`` ``_construct_tree``, ``tree_episode_generator.py``
``extract_edges_from_tree``). Spec: shared/ALGORITHMS-2.md, "SPO".

A group holds the leaves of one task's tree(s) (the ``tree`` rollout strategy): every leaf is a
whole trajectory, and a prefix step shared by several leaves is copied into each with the same
``Step.node_id``; ``Step.parent_node_id`` names the node before. A node is one segment
(``segment_turns`` turns, **[recon]** default 1 for agents). Values:

    V(leaf) = the leaf trajectory's return R
    V(n)    = mean over the children of n of V(child)   (recursive mean, not the leaf mean)

and the advantage of node n (of the edge parent -> n), on every step of n's segment:

    "rloo" (reference default):  A(n) = V(n) - V(parent)
    "grpo":                      A(n) = (V(n) - V(parent)) / (std_children(parent) + 1e-8)

with the population std over the parent's children (``np.std``). The root (the task's start
state) is the parent of the depth-0 nodes; its V is the mean over them. Each node is trained
once: a prefix step copied into several leaves is trained on its first copy only (the others
get ``Advantages.mask`` False). ``only_nonzero`` (the reference's misnamed
``only_adv_greater_than_zero``) also masks edges with A = 0.

Without node ids (a plain group), a step's node is its history prefix in the group's trie
(`TrajectoryGraph.prefix_ids`): the tree that the group's trajectories spell out. A trajectory
that ends at a node which also has children adds its return as one more child of that node.

Probability mask and whitening as SPO-chain (the reference's tree configs import the chain
config): counted tokens from ``Step.sampler_logprobs`` (`spo_chain.token_counts`), whitening
over the counted tokens of the trained steps. The edge buffer (at most 32 edges per task per
iteration, none older than 8 iterations) is the ``tree`` strategy's state; it marks the edges
it selects with ``Step.extras["edge_selected"]``, and a step marked False is masked here.

Deviations: turn-level nodes (the paper's M-token segments), leaf V = path return (intermediate
rewards included), no root step (the root is the task's start state). The paper body was not
available: equations from the reference code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.credit.base import (
    Advantages,
    CreditModule,
    CreditOptions,
    batch_stats,
    check_choice,
    register,
)
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY
from creditgym.credit.spo_chain import token_counts
from creditgym.credit.trajectory import TrajectoryGroup

ADV_METHODS = ("rloo", "grpo")
ROOT = "<root>"


@dataclass(frozen=True)
class SPOTreeConfig(CreditOptions):
    adv_method: str = "rloo"
    """"rloo": A = V(n) - V(parent); "grpo": divided by the population std of the parent's
    children (+ 1e-8)."""
    only_nonzero: bool = True
    """Mask edges whose advantage is 0 (the reference's ``only_adv_greater_than_zero``)."""
    prob_mask: float | None = 0.9
    """Tokens with p_old >= this carry no advantage (None: all count); see spo_chain."""
    whiten: bool = True
    """Whiten over the batch's counted tokens of the trained steps (unbiased variance)."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        super().check()
        check_choice("adv_method", self.adv_method, ADV_METHODS)
        if self.prob_mask is not None and not 0.0 < self.prob_mask <= 1.0:
            raise ValueError(f"prob_mask={self.prob_mask!r} must be in (0, 1] or None")


def step_nodes(group: TrajectoryGroup) -> list[list[tuple[str, str]]]:
    """(node, parent) of every step of every trajectory: recorded ids, else the trie."""
    recorded = any(s.node_id is not None for t in group for s in t.steps)
    out: list[list[tuple[str, str]]] = []
    if recorded:
        for t in group:
            row, prev = [], ROOT
            for s in t.steps:
                node = s.node_id if s.node_id is not None else f"{prev}/?"
                parent = s.parent_node_id
                if parent is None:
                    parent = prev if node != prev else (row[-1][1] if row else ROOT)
                row.append((node, parent))
                prev = node
            out.append(row)
        return out
    ids = group.graph().prefix_ids().tolist() if group.num_steps else []
    pos = 0
    for t in group:
        row, prev = [], ROOT
        for _ in t.steps:
            node = f"p{ids[pos]}"
            row.append((node, prev))
            prev, pos = node, pos + 1
        out.append(row)
    return out


def node_advantages(
    group: TrajectoryGroup,
    adv_method: str = "rloo",
    invalid_penalty: float = DEFAULT_INVALID_PENALTY,
) -> tuple[list[list[tuple[str, str]]], dict[str, float], dict[str, float]]:
    """The group's (node, parent) per step, V per node (ROOT included) and A per node."""
    nodes = step_nodes(group)
    children: dict[str, list[str]] = defaultdict(list)
    ends: dict[str, list[float]] = defaultdict(list)
    for t, row in zip(group.trajectories, nodes):
        for node, parent in row:
            if node not in children[parent]:
                children[parent].append(node)
        if row:
            ends[row[-1][0]].append(t.episode_return(invalid_penalty))
    value: dict[str, float] = {}

    def v(n: str) -> float:
        if n not in value:
            kids = [v(c) for c in children.get(n, [])] + ends.get(n, [])
            value[n] = float(np.mean(kids)) if kids else 0.0
        return value[n]

    v(ROOT)
    adv: dict[str, float] = {}
    for parent, kids in children.items():
        vals = np.array([v(c) for c in kids] + ends.get(parent, []), dtype=np.float64)
        scale = float(vals.std()) + 1e-8 if adv_method == "grpo" else 1.0
        for c in kids:
            adv[c] = (value[c] - value[parent]) / scale
    return nodes, value, adv


@register("spo_tree")
class SPOTree(CreditModule):
    """Edge advantages V(node) - V(parent) on a rollout tree (needs a branching rollout)."""

    Config = SPOTreeConfig
    needs = frozenset({"branching"})

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        values, mask = [], []
        for g in groups:
            nodes, _, adv = node_advantages(g, c.adv_method, c.invalid_penalty)
            seen: set[str] = set()
            for t, row in zip(g.trajectories, nodes):
                for s, (node, _parent) in zip(t.steps, row):
                    a = adv[node]
                    # Tree rollouts copy a shared prefix into every leaf: train its first
                    # copy only. A trie node (no recorded ids) is visited once per trajectory.
                    keep = s.node_id is None or node not in seen
                    seen.add(node)
                    if c.only_nonzero and abs(a) < 1e-12:
                        keep = False
                    if s.extras.get("edge_selected") is False:
                        keep = False
                    values.append(a)
                    mask.append(keep)
        values_a = np.asarray(values, dtype=np.float64)
        mask_a = np.asarray(mask, dtype=bool)
        steps = [s for g in groups for t in g.trajectories for s in t.steps]
        counts = token_counts(steps, c.prob_mask)
        mask_a &= counts > 0
        if c.whiten and values_a.size:
            stats = batch_stats(np.repeat(values_a, counts * mask_a))
            if stats.count > 1:
                var = stats.m2 / (stats.count - 1)
                values_a = np.where(mask_a, (values_a - stats.mean) / np.sqrt(var + 1e-8), 0.0)
            else:
                values_a = np.zeros_like(values_a)
        else:
            values_a = np.where(mask_a, values_a, 0.0)
        return Advantages(
            values=values_a,
            mask=mask_a,
            diagnostics={"trained_steps": float(mask_a.sum())},
        )
