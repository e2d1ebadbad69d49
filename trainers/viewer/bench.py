"""The dumps `benchmark_credit.py --dump-iterations` writes, in the trajectory dump schema.

One file per (method, seed, iteration): ``DIR/trajectories/<method>/seed_<s>/iter_<k>.jsonl``,
the rows of `creditgym.trainers.dump.trajectory_rows` (the advantages as the tabular update
received them) plus, per step, the exact advantage A^pi(s, a) of the policy that sampled the
batch (``reference_advantage``, null off the model) and what it is (``reference_kind``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import TrajectoryGroup
from creditgym.trainers.dump import add_reference, trajectory_rows
from creditgym.trainers.viewer.source import benchmark_dump_path

__all__ = ["parse_iterations", "write_benchmark_dump"]


def parse_iterations(text: str) -> list[int]:
    """``"0,10,20"`` -> [0, 10, 20]; ``""`` or ``"none"`` -> []."""
    text = text.strip()
    if not text or text.lower() == "none":
        return []
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as exc:
        raise ValueError(f"iterations must be a comma list of integers, got {text!r}") from exc
    if any(k < 0 for k in out):
        raise ValueError(f"iterations must be >= 0, got {text!r}")
    return out


def write_benchmark_dump(
    out: str | Path,
    method: str,
    seed: int,
    iteration: int,
    groups: Sequence[TrajectoryGroup],
    advantages: Advantages,
    reference: np.ndarray | None,
    reference_kind: str,
) -> Path:
    """Write one iteration's steps with their advantages and exact reference; returns the path."""
    rows = add_reference(trajectory_rows(iteration, groups, advantages), reference, reference_kind)
    path = benchmark_dump_path(out, method, seed, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tmp.replace(path)
    return path
