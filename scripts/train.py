"""Train an LLM agent with any credit module: rollout -> credit -> update -> weight sync.

    python scripts/train.py --config scripts/configs/demo.yaml
    python scripts/train.py --config scripts/configs/demo.yaml learner.lr=2e-5 rollout.group_size=8
    python scripts/train.py --resume runs/demo               # continue a killed run exactly
    python scripts/train.py --resume runs/demo train.iterations=20   # ... and extend it
    python scripts/train.py --config scripts/configs/demo.yaml --print-config

Data-parallel (every rank runs this same script; see the README's distributed section):

    torchrun --nproc-per-node 2 scripts/train.py --config scripts/configs/demo.yaml
    torchrun --nproc-per-node 2 scripts/train.py --resume runs/demo   # same rank count
    python scripts/train.py --config scripts/configs/demo.yaml --ray-workers 2   # Ray Train

Overrides are dotted ``key=value`` pairs (values are YAML: numbers, true/false, [lists],
{maps}); an unknown key is an error naming the nearest valid keys. A new run never overwrites an
existing run folder: it goes to ``runs/<name>-2``, ``-3``, ... instead.
"""

from __future__ import annotations

import argparse
import sys

from creditgym.trainers.config import ConfigError, load_config, parse_overrides
from creditgym.trainers.distributed import WorldSizeMismatch
from creditgym.trainers.train import load_run_config, train


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="YAML config (see scripts/configs/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in this folder")
    p.add_argument("--print-config", action="store_true", help="print the resolved config, exit")
    p.add_argument(
        "--ray-workers",
        type=int,
        metavar="N",
        help="run on N Ray Train workers (TorchTrainer) instead of this process",
    )
    p.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
    p.add_argument("--ray-gpu", action="store_true", help="one GPU per Ray Train worker")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args = p.parse_args(argv)
    if not args.config and not args.resume:
        p.error("give --config FILE (a new run) or --resume RUN_DIR")
    try:
        if args.resume:
            config = load_run_config(args.resume, parse_overrides(args.overrides))
        else:
            config = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if args.ray_workers:
        from creditgym.trainers.ray_launch import ray_train

        path = ray_train(
            config,
            num_workers=args.ray_workers,
            run_dir=args.resume,
            resume=bool(args.resume),
            use_gpu=args.ray_gpu,
            address=args.ray_address,
            argv=["scripts/train.py", *argv],
        )
        print(f"done: {config.train.iterations} iterations in {path}")
        return 0
    try:
        result = train(
            config, run_dir=args.resume, resume=bool(args.resume), argv=["scripts/train.py", *argv]
        )
    except WorldSizeMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done: {result.iterations} iterations in {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
