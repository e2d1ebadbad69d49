"""EMPG: Entropy-Modulated Policy Gradients (arXiv 2509.09265), composed with any base module.

With H_t the mean token entropy of step t's response under the old policy (``Step.entropies``,
filled by the trainer's old-log-prob pass) and A_{i,t} the base module's advantage:

    H~_t     = (H_t - min H) / (max H - min H)            min-max over the batch (all 0 if flat)
    g_t      = exp(-k H~_t) / mean_batch(exp(-k H~))        self-calibrating gradient scale
    f_{t}    = zeta exp(-k_f H~_{t+1})                      future-clarity bonus (0 at the last step)
    A'_{i,t} = g_t A_{i,t} + f_t
    A''_{i,t} = A'_{i,t} - mean_batch(A')                   final advantage normalisation

k = k_f = 1 and zeta = 0.1 (the paper's defaults). The recentring follows the paper: after
computing the modulated advantages of every step in the batch it applies a "final advantage
normalization" to zero mean (arXiv 2509.09265, Eq. 7 and Appendix A, "Final advantage
normalization"; its released pseudocode subtracts the batch mean of the step advantages and does
not divide by a std). ``recenter=False`` leaves A' as it is. Confident steps (low entropy) get their
advantage amplified and uncertain ones damped; a step leading to a confident next step earns a
small bonus. ``creditgym.credit.make("empg", base="gigpo", base_options={"mode": "mean_norm"})`` wraps any
registered module; EMPG needs what its base needs plus ``entropies``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from creditgym.credit.base import (
    Advantages,
    CreditModule,
    CreditOptions,
    batch_stats,
    make,
    register,
)
from creditgym.credit.trajectory import TrajectoryGroup


@dataclass(frozen=True)
class EMPGConfig(CreditOptions):
    base: str = "grpo"
    """Registered name of the module whose advantages EMPG modulates."""
    base_options: dict[str, Any] = field(default_factory=dict)
    """Options of the base module (checked like `creditgym.credit.make`'s overrides)."""
    k: float = 1.0
    """Sharpness of the gradient scale exp(-k H~)."""
    k_f: float = 1.0
    """Sharpness of the future-clarity bonus exp(-k_f H~_{t+1})."""
    zeta: float = 0.1
    """Weight of the future-clarity bonus."""
    recenter: bool = True
    """Subtract the batch mean of the modulated advantages (the paper's final normalisation)."""


def step_entropies(groups: Sequence[TrajectoryGroup]) -> np.ndarray:
    """H_t = mean token entropy of every step (flat order); clear error when one is missing."""
    arrays, lengths = [], []
    for gi, g in enumerate(groups):
        for ti, traj in enumerate(g.trajectories):
            for t, step in enumerate(traj.steps):
                ent = step.entropies
                if ent is None or len(ent) == 0:
                    raise ValueError(
                        f"empg needs Step.entropies (token entropies of the response from the "
                        f"old-log-prob pass); group {gi} trajectory {ti} step {t} has none"
                    )
                arrays.append(ent)
                lengths.append(len(ent))
    if not arrays:
        return np.zeros(0)
    flat = np.concatenate(arrays).astype(np.float64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.add.reduceat(flat, starts) / np.asarray(lengths, dtype=np.float64)


@register("empg")
class EMPG(CreditModule):
    """Entropy-modulated advantages on top of a base credit module."""

    Config = EMPGConfig
    needs = frozenset({"entropies"})

    def validate(self) -> None:
        c = self.config
        if c.base == "empg":
            raise ValueError("empg cannot wrap itself; pick a base such as grpo or gigpo")
        self.base = make(c.base, **c.base_options)
        # An instance attribute: what the trainer must fill is EMPG's need plus its base's.
        self.needs = frozenset({"entropies"}) | self.base.needs
        self.value_heads = self.base.value_heads

    def _recentre(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """x minus its batch mean (`batch_stats`) when ``recenter`` is on, and that mean."""
        if not self.config.recenter:
            return x, 0.0
        mean = batch_stats(x).mean
        return x - mean, mean

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        base = self.base(groups)
        h = step_entropies(groups)
        # Batch-wide min-max and mean (`batch_stats`), before any early return: in a
        # data-parallel run every rank reduces.
        hs = batch_stats(h)
        span = hs.max - hs.min
        h_norm = (h - hs.min) / span if span > 1e-12 else np.zeros_like(h)
        scale = np.exp(-c.k * h_norm)
        scale_mean = batch_stats(scale).mean
        if h.size == 0:
            if c.recenter:  # the same reductions as a non-empty rank makes
                for _ in range(1 + len(base.spans or {})):
                    batch_stats(np.zeros(0))
            return Advantages(values=np.zeros(0))
        scale /= scale_mean
        bonus = np.zeros_like(h)
        pos = 0
        for g in groups:
            for traj in g.trajectories:
                n = len(traj)
                # The step t bonus reads step t + 1 of the same trajectory; the last step has none.
                bonus[pos : pos + n - 1] = c.zeta * np.exp(-c.k_f * h_norm[pos + 1 : pos + n])
                pos += n
        values, shift = self._recentre(scale * base.values + bonus)
        spans = None
        if base.spans is not None:  # e.g. HiPER's span advantages get the same modulation
            spans = {name: self._recentre(scale * v + bonus)[0] for name, v in base.spans.items()}
        diagnostics = {f"base_{k}": v for k, v in base.diagnostics.items()}
        diagnostics["recentre_shift"] = shift
        diagnostics.update(
            {
                "entropy_mean": float(h.mean()),
                "scale_min": float(scale.min()),
                "scale_max": float(scale.max()),
                "bonus_mean": float(bonus.mean()),
            }
        )
        return Advantages(values=values, spans=spans, diagnostics=diagnostics)
