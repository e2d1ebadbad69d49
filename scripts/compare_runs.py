"""Compare training runs (e.g. the seeds of a benchmark): a table of before/after figures and a PNG.

    python scripts/compare_runs.py runs/keyrooms_small_s0 runs/keyrooms_small_s1 \
        --out runs/keyrooms_small_learning.png

For each run: eval-panel success at its first evaluation (before training) and its last, and the
mean rollout success and invalid rate over the first and last ``--window`` iterations, and, when
``scripts/evaluate.py --run RUN [--start]`` has written ``eval/valid_start.json`` and
``eval/valid.json``, their success. The table is Markdown; ``--json`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys

from creditgym.trainers.plotting import compare_runs, summarize_run


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders written by scripts/train.py")
    p.add_argument("--out", help="PNG path (default: no plot)")
    p.add_argument("--window", type=int, default=5, help="iterations averaged at each end")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    try:
        rows = [summarize_run(r, args.window) for r in args.runs]
        png = compare_runs(args.runs, args.out, args.window) if args.out else None
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    w = args.window
    print(
        "| run | iterations | eval success before -> after (tasks) | eval invalid before -> after"
        f" | rollout success first {w} -> last {w} | rollout invalid first {w} -> last {w} "
        "| evaluate.py success start -> end (tasks) | s/iteration |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['iterations']} "
            f"| {_f(r['eval_before'])} -> {_f(r['eval_after'])} ({r['eval_tasks']}) "
            f"| {_f(r['eval_invalid_before'])} -> {_f(r['eval_invalid_after'])} "
            f"| {_f(r['rollout_success_first'])} -> {_f(r['rollout_success_last'])} "
            f"| {_f(r['rollout_invalid_first'])} -> {_f(r['rollout_invalid_last'])} "
            f"| {_f(r['panel_before'])} -> {_f(r['panel_after'])} ({r['panel_tasks'] or '-'}) "
            f"| {r['seconds_per_iteration'] or 0:.1f} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    if png:
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
