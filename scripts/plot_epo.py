"""Plot EPO runs against a baseline: token entropy and rollout success per iteration.

    python scripts/plot_epo.py --baseline runs/h8/llm_gigpo_s0 --epo runs/h8/llm_epo_s0 \
        --out docs/figures/epo_keyrooms_small.png

Reads each run's ``metrics.jsonl`` (``train/old_entropy``: the token-mean entropy of the
old-log-prob pass; ``rollout/success``: the share of the iteration's episodes won). Several
``--baseline`` / ``--epo`` folders (seeds) are drawn as thin lines, one marker and dash style
per seed, and with two or more, a thick line gives the arm's mean over the runs at each
iteration that all of them reached.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from creditgym.trainers.logger import read_metrics

KEYS = (
    ("train/old_entropy", "token entropy (old-log-prob pass)"),
    ("rollout/success", "rollout success"),
)


def curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """(iteration, value) of each key of `KEYS` in a run's metrics."""
    out: dict[str, list[tuple[int, float]]] = {k: [] for k, _ in KEYS}
    for rec in read_metrics(run / "metrics.jsonl"):
        for key, _ in KEYS:
            if isinstance(rec.get(key), (int, float)) and rec.get("iteration", 0) > 0:
                out[key].append((int(rec["iteration"]), float(rec[key])))
    return out


def arm_mean(arm: list[dict[str, list[tuple[int, float]]]], key: str) -> list[tuple[int, float]]:
    """The mean of `key` over an arm's runs, at each iteration every run reached."""
    per_run = [dict(c[key]) for c in arm]
    if not per_run:
        return []
    common = sorted(set.intersection(*(set(d) for d in per_run)))
    return [(x, sum(d[x] for d in per_run) / len(per_run)) for x in common]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", nargs="+", required=True, help="baseline run folders")
    p.add_argument("--epo", nargs="+", required=True, help="EPO run folders")
    p.add_argument("--out", required=True, help="PNG path")
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    data, means = {}, {}
    styles = (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", (0, (5, 1))))
    for label, color, runs in (("baseline", "tab:blue", a.baseline), ("EPO", "tab:red", a.epo)):
        arm = []
        for i, run in enumerate(map(Path, runs)):
            c = curves(run)
            data[str(run)] = c
            arm.append(c)
            marker, dash = styles[i % len(styles)]
            for ax, (key, title) in zip(axes, KEYS):
                if c[key]:
                    xs, ys = zip(*c[key])
                    ax.plot(
                        xs,
                        ys,
                        marker=marker,
                        ls=dash,
                        lw=1,
                        ms=4,
                        alpha=0.6,
                        color=color,
                        label=f"{label} ({run.name})",
                    )
                ax.set(title=title, xlabel="iteration")
        means[label] = {key: arm_mean(arm, key) for key, _ in KEYS}
        if len(arm) > 1:
            for ax, (key, _) in zip(axes, KEYS):
                if means[label][key]:
                    xs, ys = zip(*means[label][key])
                    ax.plot(xs, ys, lw=2.5, color=color, label=f"{label} mean of {len(arm)}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    report = {"out": a.out, "runs": data, "means": means}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
