"""Metrics logger: JSONL records, non-finite values, torn lines and truncation for resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from creditgym.trainers.logger import MetricsLogger, read_metrics, truncate_metrics
from creditgym.trainers.progress import format_summary


def test_metrics_jsonl_truncation_for_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path, tensorboard=False) as log:
        for k in range(4):
            log.log(k, {"rollout/success": k / 4, "train/loss": float("nan"), "arr": np.float32(2)})
    with path.open("a") as fh:
        fh.write('{"iteration": 4, "torn')  # a killed writer
    records = read_metrics(path)
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    assert records[1]["train/loss"] is None and records[1]["arr"] == 2.0
    assert truncate_metrics(path, 2) == 1
    assert [r["iteration"] for r in read_metrics(path)] == [0, 1, 2]


def test_summary_line_shows_success_losses_and_timing() -> None:
    line = format_summary(
        2,
        5,
        {
            "rollout/success": 0.25,
            "train/pg_loss": 0.5,
            "time/generate": 3.0,
            "time/iteration": 4.0,
            "eval/success": 0.5,
        },
    )
    assert "iter   2/5" in line and "success 0.25" in line and "pg_loss 0.5000" in line
    assert "gen 3.0" in line and "iter 4.0s" in line and "EVAL success 0.50" in line
