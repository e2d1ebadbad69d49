"""GiGPO: Group-in-Group Policy Optimization (Feng et al. 2025, arXiv 2505.10978).

Two levels of group-relative advantage inside each group of G trajectories of one task:

    A^E_i     = norm_{j in group}(R_j)                         episode level (as GRPO)
    A^S_{i,t} = norm_{(j,u) in anchor(s_{i,t})}(Rhat_{j,u})     step level
    A_{i,t}   = A^E_i + omega * A^S_{i,t}

where Rhat_{i,t} = r_{i,t} + gamma * Rhat_{i,t+1} (gamma = 0.95) and the anchor group of a step is
every step of every trajectory in the group taken in the same state (revisits inside one
trajectory count each time). States are equal when their `state_key`s are equal; the option
``similarity`` instead clusters observation texts greedily: a step joins the first cluster whose
first member has a `difflib` ratio >= the threshold with it (0.9 is used for search).

Defaults follow the paper: ``mean_std_norm`` ("w/ std"), omega = 1, gamma = 0.95. The std is the
sample std (ddof = 1), as ``torch.std`` in verl-agent; ``std="population"`` is an option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

import numpy as np

from creditgym.credit.base import (
    NORM_MODES,
    STD_MODES,
    Advantages,
    CreditModule,
    check_choice,
    dense_ids,
    group_normalize,
    register,
)
from creditgym.credit.grpo import episode_advantages
from creditgym.credit.trajectory import DEFAULT_INVALID_PENALTY, TrajectoryGroup


@dataclass(frozen=True)
class GiGPOConfig:
    gamma: float = 0.95
    """Discount of the step returns Rhat used inside anchor groups."""
    omega: float = 1.0
    """Weight of the step-level advantage."""
    mode: str = "mean_std_norm"
    """Normalisation at both levels: "mean_std_norm" (paper default) or "mean_norm"."""
    std: str = "sample"
    """Which std divides: "sample" (ddof=1, as torch.std) or "population" (ddof=0)."""
    similarity: float | None = None
    """None: anchor states match by exact `state_key`. A float in (0, 1]: cluster observation
    texts whose similarity ratio to the cluster's first member is >= this value."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""


def _similarity_clusters(texts: Sequence[str], threshold: float) -> list[int]:
    """Greedy clustering: each text joins the first cluster whose seed is similar enough."""
    seeds: list[str] = []
    exact: dict[str, int] = {}
    labels = []
    for text in texts:
        if text in exact:
            labels.append(exact[text])
            continue
        label = -1
        for ci, seed in enumerate(seeds):
            m = SequenceMatcher(None, seed, text, autojunk=False)
            # The quick ratios are cheap upper bounds of ratio(): skip hopeless pairs early.
            if (
                m.real_quick_ratio() >= threshold
                and m.quick_ratio() >= threshold
                and m.ratio() >= threshold
            ):
                label = ci
                break
        if label < 0:
            label = len(seeds)
            seeds.append(text)
        exact[text] = label
        labels.append(label)
    return labels


@register("gigpo")
class GiGPO(CreditModule):
    """Episode-level plus anchor-state step-level group-relative advantages."""

    Config = GiGPOConfig

    def validate(self) -> None:
        c = self.config
        check_choice("mode", c.mode, NORM_MODES)
        check_choice("std", c.std, STD_MODES)
        if c.similarity is not None and not 0.0 < c.similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1] or None, got {c.similarity}")

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        episode = episode_advantages(groups, c.mode, c.std, c.invalid_penalty)
        step_returns = np.empty(len(episode), dtype=np.float64)
        keys: list[tuple[int, object]] = []
        pos = 0
        for gi, g in enumerate(groups):
            if c.similarity is not None:
                texts = [s.observation for t in g.trajectories for s in t.steps]
                labels: Sequence[object] = _similarity_clusters(texts, c.similarity)
            else:
                labels = [s.state_key for t in g.trajectories for s in t.steps]
            keys.extend((gi, lab) for lab in labels)
            for traj in g.trajectories:
                acc = 0.0
                end = pos + len(traj.steps)
                for k in range(len(traj.steps) - 1, -1, -1):
                    step = traj.steps[k]
                    r = step.reward - (0.0 if step.valid else c.invalid_penalty)
                    acc = r + c.gamma * acc
                    step_returns[pos + k] = acc
                pos = end
        anchor_ids = dense_ids(keys)
        step_adv = group_normalize(step_returns, anchor_ids, c.mode, c.std)
        sizes = np.bincount(anchor_ids) if len(anchor_ids) else np.zeros(0)
        diagnostics = {
            "anchor_groups": float(len(sizes)),
            "anchor_group_size_mean": float(sizes.mean()) if len(sizes) else 0.0,
            "anchor_group_size_max": float(sizes.max()) if len(sizes) else 0.0,
            "anchor_nonsingleton_step_frac": float(np.mean(sizes[anchor_ids] > 1))
            if len(sizes)
            else 0.0,
            "step_adv_std": float(step_adv.std()) if len(step_adv) else 0.0,
        }
        return Advantages(values=episode + c.omega * step_adv, diagnostics=diagnostics)
