"""Behaviour-clone an env's expert into the model before RL (see `creditgym.trainers.warmstart`).

    python scripts/warmstart.py --config scripts/configs/keyrooms_small.yaml \
        --out runs/keyrooms_small_bc --episodes 64 --epochs 2
    python scripts/train.py --config scripts/configs/keyrooms_small.yaml \
        model.name=runs/keyrooms_small_bc/model seed=0 name=keyrooms_small_s0

The demonstrations are played by the env's expert on the train split and recorded in the exact
prompt format of the config's ``agent:`` section. The merged model lands in ``<out>/model`` and a
report (NLL per epoch, greedy step accuracy on held-out expert episodes before and after) in
``<out>/warmstart.json``. Overrides are the same dotted ``key=value`` pairs as scripts/train.py.
"""

from __future__ import annotations

import argparse
import json
import sys

from creditgym.trainers.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True, help="YAML training config (scripts/configs/)")
    p.add_argument("--out", required=True, help="output folder (model/ and warmstart.json)")
    p.add_argument("--episodes", type=int, default=64, help="expert episodes on the train split")
    p.add_argument("--epochs", type=int, default=2, help="passes over the demonstrations")
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    p.add_argument("--mini-batches", type=int, default=8, help="optimizer steps per epoch")
    p.add_argument(
        "--eval-episodes", type=int, default=16, help="held-out expert episodes (eval split)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args = p.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from creditgym.trainers.warmstart import warm_start

    try:
        report = warm_start(
            config,
            args.out,
            episodes=args.episodes,
            epochs=args.epochs,
            lr=args.lr,
            mini_batches=args.mini_batches,
            eval_episodes=args.eval_episodes,
        )
    except (ValueError, TypeError, RuntimeError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in report.items() if k != "history"}
    print(json.dumps(summary, indent=2))
    print(f"train from it with: model.name={report['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
