"""Run plots and the before/after summary, on run folders written the way the trainer writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from creditgym.trainers.logger import MetricsLogger
from creditgym.trainers.plotting import compare_runs, plot_run, summarize_run


def _run(path: Path, successes: list[float], evals: dict[int, float]) -> Path:
    logger = MetricsLogger(path / "metrics.jsonl", tensorboard=False)
    for k, s in enumerate(successes, start=1):
        logger.log(
            k,
            {
                "rollout/success": s,
                "rollout/invalid_rate": 1.0 - s,
                "rollout/mean_return": 10 * s,
                "train/pg_loss": 0.1,
                "time/iteration": 2.0,
                "time/update": 1.5,
                "time/generate": 0.5,
            },
        )
    logger.close()
    (path / "eval").mkdir(parents=True, exist_ok=True)
    for it, s in evals.items():
        report = {"iteration": it, "success": s, "invalid_rate": 0.5, "episodes": 8.0}
        (path / "eval" / f"iter_{it:06d}.json").write_text(json.dumps(report))
    return path


def test_summary_reads_first_and_last_evals_and_iteration_windows(tmp_path: Path) -> None:
    run = _run(tmp_path / "a", [0.0, 0.25, 0.5, 0.75, 1.0, 1.0], {0: 0.125, 6: 0.625})
    s = summarize_run(run, window=2)
    assert s["iterations"] == 6
    assert (s["eval_before"], s["eval_after"]) == (0.125, 0.625)
    assert s["rollout_success_first"] == pytest.approx(0.125)
    assert s["rollout_success_last"] == pytest.approx(1.0)
    assert s["rollout_invalid_last"] == pytest.approx(0.0)
    assert s["panel_before"] is None
    for name, success in (("valid_start.json", 0.25), ("valid.json", 0.5)):
        (run / "eval" / name).write_text(json.dumps({"success": success, "tasks": 64}))
    s = summarize_run(run, window=2)
    assert (s["panel_before"], s["panel_after"], s["panel_tasks"]) == (0.25, 0.5, 64)


def test_plots_are_written(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [0.0, 0.5, 1.0], {0: 0.0, 3: 0.5})
    b = _run(tmp_path / "b", [0.5, 0.5], {0: 0.25})
    assert summarize_run(b)["eval_after"] is None  # only a before-training eval
    for png in (plot_run(a), compare_runs([a, b], tmp_path / "cmp.png")):
        assert png.exists() and png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no runs"):
        compare_runs([], tmp_path / "x.png")
