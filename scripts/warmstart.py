"""Behaviour-clone an env's expert into the model before RL (see `creditgym.trainers.warmstart`).

    python scripts/warmstart.py --config scripts/configs/keyrooms_small.yaml \
        --out runs/keyrooms_small_bc --episodes 64 --epochs 2
    python scripts/train.py --config scripts/configs/keyrooms_small.yaml \
        model.name=runs/keyrooms_small_bc/model seed=0 name=keyrooms_small_s0

The demonstrations are played by the env's expert on the train split and recorded in the exact
prompt format of the config's ``agent:`` section. The merged model lands in ``<out>/model`` and a
report (NLL per epoch, greedy step accuracy on held-out expert episodes before and after) in
``<out>/warmstart.json``. Overrides are the same dotted ``key=value`` pairs as scripts/train.py;
the flags are sugar for the ``warmstart:`` section's keys (``--epochs 2`` is
``warmstart.epochs=2``), whose values in the config file, or else their defaults, apply otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from creditgym.trainers.config import ConfigError, WarmstartConfig, load_config, parse_overrides

#: Flags that are sugar for ``warmstart.*`` overrides (their defaults are `WarmstartConfig`'s).
FLAGS = {
    "--episodes": ("warmstart.episodes", int),
    "--epochs": ("warmstart.epochs", int),
    "--lr": ("warmstart.lr", float),
    "--mini-batches": ("warmstart.mini_batches", int),
    "--eval-episodes": ("warmstart.eval_episodes", int),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True, help="YAML training config (scripts/configs/)")
    p.add_argument("--out", required=True, help="output folder (model/ and warmstart.json)")
    fields = WarmstartConfig.model_fields
    for flag, (key, kind) in FLAGS.items():
        field = fields[key.split(".", 1)[1]]
        doc = " ".join((field.description or "").split())
        p.add_argument(flag, type=kind, default=None, help=f"[{key}={field.default}] {doc}")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = {
        key: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, (key, _) in FLAGS.items()
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None
    }
    try:
        config = load_config(args.config, {**given, **parse_overrides(args.overrides)})
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.warmstart.episodes < 1:
        print(
            "error: warmstart.episodes is 0 in the config: give --episodes N "
            "(or warmstart.episodes=N)",
            file=sys.stderr,
        )
        return 2
    from creditgym.trainers.warmstart import warm_start

    try:
        report = warm_start(config, args.out, progress=config.logging.progress)
    except (ValueError, TypeError, RuntimeError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in report.items() if k != "history"}
    print(json.dumps(summary, indent=2))
    print(f"train from it with: model.name={report['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
