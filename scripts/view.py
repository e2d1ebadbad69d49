"""Write the trajectory viewer page of a run or benchmark folder: one self-contained HTML file.

    python scripts/view.py runs/demo --out runs/demo/view.html
    python scripts/view.py runs/bench --run gigpo/0 --iteration 10 --out view.html

DIR is a training run folder (config.yaml + trajectories/iter_<k>.jsonl) or a benchmark_credit.py
folder written with --dump-iterations. The page needs no server and no network: open it in a
browser. See `creditgym.trainers.viewer` for what it shows.
"""

from __future__ import annotations

import argparse
import sys
import time

from creditgym import credit
from creditgym.trainers.viewer import SourceError, write_view
from creditgym.trainers.viewer.layout import LAYOUTS


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dir", help="a training run folder or a benchmark_credit.py output folder")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--iteration", type=int, default=None, help="dumped iteration (default: last)")
    p.add_argument("--group", type=int, default=None, help="only this group (default: all)")
    p.add_argument(
        "--methods",
        default="",
        help=f"comma list of credit methods to recompute (default: all of {credit.available()})",
    )
    p.add_argument(
        "--run", default=None, help="benchmark folder: METHOD or METHOD/SEED (default: first, 0)"
    )
    p.add_argument("--top-k", type=int, default=150, help="most states drawn per group")
    p.add_argument("--layout", choices=LAYOUTS, default="auto", help="auto: dot if installed")
    a = p.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in credit.available()]
    if unknown:
        p.error(f"unknown credit methods {unknown}; available: {credit.available()}")
    t0 = time.perf_counter()
    try:
        meta = write_view(
            a.dir,
            a.out,
            iteration=a.iteration,
            group=a.group,
            methods=methods or None,
            run=a.run,
            top_k=a.top_k,
            layout=a.layout,
        )
    except SourceError as exc:
        p.error(str(exc))
    print(
        f"wrote {meta['out']} ({meta['bytes'] / 1e6:.2f} MB, iteration {meta['iteration']}, "
        f"{meta['groups_total']} groups, {meta['steps_total']} steps, "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    sys.stdout.flush()
    return meta


if __name__ == "__main__":
    main()
