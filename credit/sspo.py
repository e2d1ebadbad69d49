"""Single-stream Policy Optimization (SSPO; arXiv 2509.13232, code verl ``recipe/spo``).

No groups: each task x keeps a value v(x) in a tracker that persists across iterations (the
``sspo_value`` tracker, `creditgym.trainers.trackers`), and a trajectory's advantage is its return
minus the task's value before this batch's update, normalised over the whole batch:

    A_i = R_i - v_{-1}(x_i),    A~_i = (A_i - mean_B A) / (std_B A + 1e-8)

for every step of trajectory i (std: the sample std, as ``torch.std`` in the ref; ``std =
"population"`` is an option). The tracker hands v_{-1}(x) in ``Trajectory.info["task_baseline"]``
(``needs = {"task_baseline"}``); the trainer or benchmark must name a tracker that provides it.
``per_step_rows=True`` normalises over every step row instead of over trajectories (as GRPO's
option). ``normalize=False`` leaves A_i raw (for tests and ablations).
"""

from __future__ import annotations

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
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, episode_returns
from creditgym.credit.trajectory import TrajectoryGroup

BASELINE_KEY = "task_baseline"


@dataclass(frozen=True)
class SSPOConfig(CreditOptions):
    std: str = "sample"
    """Std of the global normalisation: "sample" (ddof 1, the ref's torch.std) or "population"."""
    eps: float = 1e-8
    """Added to the std (the ref's 1e-8)."""
    normalize: bool = True
    """Normalise over the whole batch (the paper and ref); False leaves R_i - v(x)."""
    per_step_rows: bool = False
    """Normalise over every step row (long trajectories weigh more) instead of trajectories."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        check_choice("std", self.std, ("sample", "population"))
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")


def task_baselines(groups: Sequence[TrajectoryGroup]) -> np.ndarray:
    """v_{-1}(x) of every trajectory (flat order), as the tracker wrote it."""
    out = []
    for g in groups:
        for t in g.trajectories:
            if BASELINE_KEY not in t.info:
                raise ValueError(
                    "sspo needs a per-task baseline in Trajectory.info['task_baseline']: run it "
                    "with a tracker that provides 'task_baseline' (tracker.name=sspo_value)"
                )
            out.append(float(t.info[BASELINE_KEY]))
    return np.asarray(out, dtype=np.float64)


@register("sspo")
class SSPO(CreditModule):
    """Return minus the tracked task value, normalised over the batch (module docstring)."""

    Config = SSPOConfig
    needs = frozenset({BASELINE_KEY})

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        returns, lengths, _ = episode_returns(groups, c.invalid_penalty)
        raw = returns - task_baselines(groups)
        rows = np.repeat(raw, lengths) if c.per_step_rows else raw
        if c.normalize and rows.size:
            stats = batch_stats(rows)
            sd = stats.std(ddof=1 if c.std == "sample" else 0)
            rows = (rows - stats.mean) / (sd + c.eps) if stats.count > 1 else np.zeros_like(rows)
        values = rows if c.per_step_rows else np.repeat(rows, lengths)
        return Advantages(
            values=np.asarray(values, dtype=np.float64),
            diagnostics={"baseline_mean": float(np.mean(raw + 0)) if raw.size else 0.0},
        )
