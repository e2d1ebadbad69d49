"""Learning-curve plots of a run folder (read from its ``metrics.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from creditgym.trainers.logger import read_metrics

__all__ = ["compare_runs", "plot_run", "summarize_run"]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            xs.append(int(r["iteration"]))
            ys.append(float(value))
    return xs, ys


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Save a PNG with success (rollout and eval), return, losses and phase timings per iteration.

    Returns the PNG's path (default ``<run_dir>/learning_curve.png``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records:
        raise ValueError(f"{run_dir} has no metrics to plot")
    out = Path(out) if out else run_dir / "learning_curve.png"
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    success = (("rollout/success", "train rollouts", "-o"), ("eval/success", "eval panel", "-s"))
    _plot_lines(axes[0][0], records, success, "success rate")
    axes[0][0].set_ylim(-0.05, 1.05)
    rollouts = (
        ("rollout/mean_return", "mean return", "-o"),
        ("rollout/invalid_rate", "invalid rate", "-o"),
    )
    _plot_lines(axes[0][1], records, rollouts, "rollouts")
    learner = [
        (k, k.split("/", 1)[1], "-o")
        for k in ("train/loss", "train/pg_loss", "train/kl", "train/entropy")
    ]
    _plot_lines(axes[1][0], records, learner, "learner")
    _plot_phases(axes[1][1], records)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plot_lines(ax: Any, records: list[dict], series: Any, title: str) -> None:
    """One line per (metric key, label, style) that has values, against the iteration."""
    for key, label, style in series:
        xs, ys = _series(records, key)
        if xs:
            ax.plot(xs, ys, style, label=label, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("iteration")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")


def _plot_phases(ax: Any, records: list[dict]) -> None:
    """Stacked bars of each iteration's phase seconds."""
    phases = ("generate", "env", "credit", "prepare", "update", "sync", "bookkeeping")
    iters = [r for r in records if "time/iteration" in r]
    if iters:
        xs = [int(r["iteration"]) for r in iters]
        bottom = [0.0] * len(iters)
        for phase in phases:
            ys = [float(r.get(f"time/{phase}") or 0.0) for r in iters]
            ax.bar(xs, ys, bottom=bottom, label=phase)
            bottom = [b + y for b, y in zip(bottom, ys)]
        ax.legend(loc="best", fontsize=7)
    ax.set_title("seconds per iteration")
    ax.set_xlabel("iteration")


def _eval_reports(run_dir: Path) -> list[dict]:
    paths = sorted((run_dir / "eval").glob("iter_*.json"))  # the trainer's own evaluations
    return [json.loads(p.read_text()) for p in paths]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_run(run_dir: str | Path, window: int = 5) -> dict:
    """Before/after figures of one run: eval success at its first and last eval, and the mean
    rollout success and invalid rate over the first and last `window` iterations."""
    run_dir = Path(run_dir)
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "rollout/success" in r]
    evals = _eval_reports(run_dir)
    head, tail = records[:window], records[-window:]
    # Larger evaluations written by `scripts/evaluate.py --run` (with --start: the starting model).
    standalone = {}
    for label, name in (("before", "valid_start.json"), ("after", "valid.json")):
        path = run_dir / "eval" / name
        if path.exists():
            report = json.loads(path.read_text())
            standalone[f"panel_{label}"] = report["success"]
            standalone["panel_tasks"] = int(report["tasks"])
    return {
        **dict.fromkeys(("panel_before", "panel_after", "panel_tasks")),
        **standalone,
        "run": run_dir.name,
        "iterations": len(records),
        "eval_tasks": int(evals[0]["episodes"]) if evals else 0,
        "eval_before": evals[0]["success"] if evals else None,
        "eval_before_iteration": evals[0]["iteration"] if evals else None,
        "eval_after": evals[-1]["success"] if len(evals) > 1 else None,
        "eval_after_iteration": evals[-1]["iteration"] if len(evals) > 1 else None,
        "eval_invalid_before": evals[0]["invalid_rate"] if evals else None,
        "eval_invalid_after": evals[-1]["invalid_rate"] if len(evals) > 1 else None,
        "rollout_success_first": _mean([r["rollout/success"] for r in head]),
        "rollout_success_last": _mean([r["rollout/success"] for r in tail]),
        "rollout_invalid_first": _mean([r["rollout/invalid_rate"] for r in head]),
        "rollout_invalid_last": _mean([r["rollout/invalid_rate"] for r in tail]),
        "seconds_per_iteration": _mean([r["time/iteration"] for r in records]),
    }


def compare_runs(run_dirs: list[str | Path], out: str | Path, window: int = 5) -> Path:
    """One PNG for several runs (e.g. seeds): rollout success (moving mean over `window`
    iterations), invalid rate, and eval success per evaluation, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ValueError("no runs to compare")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for k, run in enumerate(run_dirs):
        run = Path(run)
        records = read_metrics(run / "metrics.jsonl")
        if not records:
            raise ValueError(f"{run} has no metrics to plot")
        colour = f"C{k % 10}"
        xs, ys = _series(records, "rollout/success")
        smooth = [_mean(ys[max(0, i - window + 1) : i + 1]) for i in range(len(ys))]
        axes[0].plot(xs, ys, "o", color=colour, alpha=0.3, markersize=3)
        axes[0].plot(xs, smooth, "-", color=colour, label=run.name)
        xs, ys = _series(records, "rollout/invalid_rate")
        axes[1].plot(xs, ys, "-o", color=colour, markersize=3, label=run.name)
        evals = _eval_reports(run)
        axes[2].plot(
            [e["iteration"] for e in evals],
            [e["success"] for e in evals],
            "-s",
            color=colour,
            label=run.name,
        )
    titles = (
        f"rollout success (dots) and its {window}-iteration mean",
        "invalid-action rate in rollouts",
        "eval-panel success",
    )
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.legend(loc="best", fontsize=8)
    axes[0].set_ylim(-0.05, 1.05)
    axes[2].set_ylim(-0.05, 1.05)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
