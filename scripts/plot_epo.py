"""Plot EPO runs against a baseline: token entropy and rollout success per iteration.

    python scripts/plot_epo.py --baseline runs/h8/llm_gigpo_s0 --epo runs/h8/llm_epo_s0 \
        --out docs/figures/epo_keyrooms_small.png

Reads each run's ``metrics.jsonl`` (``train/old_entropy``: the token-mean entropy of the
old-log-prob pass; ``rollout/success``: the share of the iteration's episodes won). Several
``--baseline`` / ``--epo`` folders (seeds) are drawn as separate thin lines.
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
    data = {}
    for label, color, runs in (("baseline", "tab:blue", a.baseline), ("EPO", "tab:red", a.epo)):
        for run in map(Path, runs):
            c = curves(run)
            data[str(run)] = c
            for ax, (key, title) in zip(axes, KEYS):
                if c[key]:
                    xs, ys = zip(*c[key])
                    ax.plot(xs, ys, marker="o", color=color, label=f"{label} ({run.name})")
                ax.set(title=title, xlabel="iteration")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(json.dumps({"out": a.out, "runs": data}))
    return data


if __name__ == "__main__":
    main()
