"""Learning-curve plots of a run folder (read from its ``metrics.jsonl``)."""

from __future__ import annotations

from pathlib import Path

from trainers.logger import read_metrics

__all__ = ["plot_run"]


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
    ax = axes[0][0]
    for key, label, style in (
        ("rollout/success", "train rollouts", "-o"),
        ("eval/success", "eval panel", "-s"),
    ):
        xs, ys = _series(records, key)
        if xs:
            ax.plot(xs, ys, style, label=label, markersize=3)
    ax.set_title("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("iteration")
    ax.legend(loc="best")

    ax = axes[0][1]
    for key, label in (
        ("rollout/mean_return", "mean return"),
        ("rollout/invalid_rate", "invalid rate"),
    ):
        xs, ys = _series(records, key)
        if xs:
            ax.plot(xs, ys, "-o", label=label, markersize=3)
    ax.set_title("rollouts")
    ax.set_xlabel("iteration")
    ax.legend(loc="best")

    ax = axes[1][0]
    for key in ("train/loss", "train/pg_loss", "train/kl", "train/entropy"):
        xs, ys = _series(records, key)
        if xs:
            ax.plot(xs, ys, "-o", label=key.split("/", 1)[1], markersize=3)
    ax.set_title("learner")
    ax.set_xlabel("iteration")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")

    ax = axes[1][1]
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
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
