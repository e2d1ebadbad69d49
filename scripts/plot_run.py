"""Save a run's learning curve (success, return, losses, seconds per phase) as a PNG.

python scripts/plot_run.py runs/demo                  # -> runs/demo/learning_curve.png
python scripts/plot_run.py runs/demo --out curve.png
"""

from __future__ import annotations

import argparse
import sys

from creditgym.trainers.plotting import plot_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dir", help="a run folder written by scripts/train.py")
    p.add_argument("--out", help="PNG path (default: <run_dir>/learning_curve.png)")
    args = p.parse_args(argv)
    try:
        path = plot_run(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
