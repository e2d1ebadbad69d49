"""Evaluate a model (or a training run's latest checkpoint) on a task panel; write a JSON report.

    python scripts/evaluate.py --model smollm2-135m --env creditgym/KeyRooms-v0 \
        --env-kwargs '{"level": "small"}' --panel valid --tasks 50 --out report.json
    python scripts/evaluate.py --run runs/demo --panel test --tasks 100
    python scripts/evaluate.py --run runs/demo --start --panel test --tasks 100   # before training
    python scripts/evaluate.py --model smollm2-135m --config scripts/configs/demo.yaml --tasks 64
    python scripts/evaluate.py --run runs/demo --tasks 64 agent.temperature=0.5 env.kwargs.max_steps=20

One episode per task on the first ``--tasks`` tasks of the panel, with fixed reset seeds, so two
reports with the same panel hash are comparable. The report holds success overall and per task
type, mean return, invalid-action rate, the per-task results, the panel hash and the settings.
``--model`` takes "smollm2-135m" (default), "tiny", a local Hugging Face folder or a hub id;
``--backend openai`` (evaluation only) takes ``--backend-kwargs '{"base_url": ...}'``.

Settings come from the one config loader: the run's saved config, a ``--config`` file or the
defaults, then dotted ``key=value`` overrides (`creditgym.trainers.config`). The agent and env
flags are sugar for those overrides (the config key is in brackets in ``--help``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from creditgym.trainers.config import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    parse_overrides,
)
from creditgym.trainers.evaluation import evaluate_policy
from creditgym.trainers.rollout import EnvPool


def _json_dict(parser: argparse.ArgumentParser, text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"{flag} must be a JSON object: {exc}")
    if not isinstance(value, dict):
        parser.error(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value


#: Flags that are sugar for a config override: flag -> config key (JSON flags are dicts).
FLAGS = {
    "--env": "env.id",
    "--env-kwargs": "env.kwargs",
    "--backend": "backend.name",
    "--backend-kwargs": "backend.kwargs",
    "--temperature": "agent.temperature",
    "--history-length": "agent.history_length",
    "--max-new-tokens": "agent.max_new_tokens",
    "--output-format": "agent.output_format",
    "--seed": "eval.seed",
}
_JSON_FLAGS = ("--env-kwargs", "--backend-kwargs")


def _overrides(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as dotted overrides, then the trailing ``key=value`` ones."""
    out: dict[str, Any] = {}
    for flag, key in FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            out[key] = _json_dict(p, value, flag) if flag in _JSON_FLAGS else value
    return {**out, **parse_overrides(args.overrides)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="model name, HF folder or hub id")
    src.add_argument("--run", help="a run folder: evaluate its latest checkpoint, its settings")
    p.add_argument(
        "--start",
        action="store_true",
        help="with --run: evaluate the run's starting model (its iteration 0), not its checkpoint",
    )
    p.add_argument(
        "--config",
        help="with --model: take the agent and env settings from this training config",
    )
    p.add_argument("--env", help="[env.id] registered env id (default: the run's or the config's)")
    p.add_argument("--env-kwargs", help="[env.kwargs] JSON dict for gymnasium.make")
    p.add_argument("--panel", default="valid", help="split: train, valid or test")
    p.add_argument("--tasks", type=int, default=50, help="first N tasks of the panel")
    p.add_argument(
        "--backend",
        help="[backend.name] with --model: a registered backend (default hf; a --config's "
        "backend is not used)",
    )
    p.add_argument("--backend-kwargs", help="[backend.kwargs] JSON dict for the backend")
    p.add_argument("--temperature", type=float, help="[agent.temperature] sampling temperature")
    p.add_argument("--seed", type=int, help="[eval.seed] reset and sampling seed (default 1234)")
    p.add_argument("--history-length", type=int, help="[agent.history_length]")
    p.add_argument("--max-new-tokens", type=int, help="[agent.max_new_tokens]")
    p.add_argument("--output-format", help="[agent.output_format] action, search, tool or hiper")
    p.add_argument("--out", help="report path (default: <run>/eval/<panel>.json or stdout only)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides of the training config (agent.*, env.*, backend.*, eval.seed)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.run and not args.env and not args.config:
        p.error("--env (or --config) is required with --model")
    if args.config and args.run:
        p.error("--config goes with --model; a --run has its own config")
    if args.start and not args.run:
        p.error("--start needs --run")
    try:
        overrides = _overrides(p, args)
        if args.run:
            from creditgym.trainers.run_folder import load_run_config

            base = load_run_config(args.run)
        else:
            base = load_config(args.config)
        # The settings this evaluation uses: the run's or the config's, with the overrides.
        config = from_dict(
            apply_overrides(base.model_dump(mode="json"), overrides),
            f"{args.run or args.config or 'defaults'} + overrides",
        )
        if not args.run:  # a training config's backend describes its training, not this report
            backend_overrides = {k: v for k, v in overrides.items() if k.startswith("backend.")}
            backend_cfg = from_dict(apply_overrides({}, backend_overrides), "--backend").backend
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import torch

    from creditgym.agents.backends import make_backend
    from creditgym.agents.base import check_format
    from creditgym.trainers.seeding import seed_everything
    from creditgym.trainers.wiring import make_agent

    seed_everything(config.eval.seed)
    env_id, env_kwargs = config.env.id, config.env.kwargs
    check_format(env_id, config.agent.output_format)  # before a model is loaded
    if args.run:
        from creditgym.trainers.train import Trainer

        trainer = Trainer(base, run_dir=args.run, resume=True)
        trainer.build(pools=False)
        iteration = 0 if args.start else trainer.load_latest_weights()
        agent = trainer.agent if config.agent == base.agent else None
        backend = trainer.backend
        backend_name = base.backend.name
        tokenizer = trainer.agent.tokenizer
        model_name = f"{args.run} (iteration {iteration})"
    else:
        from transformers import AutoTokenizer

        from creditgym.agents.models import resolve_model

        model_name = args.model or "smollm2-135m"
        path = resolve_model(model_name)
        backend = make_backend(backend_cfg.name, path, **backend_cfg.kwargs)
        backend_name = backend_cfg.name
        tokenizer = AutoTokenizer.from_pretrained(path)
        agent = None
    if agent is None:
        agent, _ = make_agent(config.agent, backend, tokenizer)
    pool = EnvPool(env_id, min(args.tasks, 64), split=args.panel, env_kwargs=env_kwargs)
    t0 = time.perf_counter()
    with torch.inference_mode():
        result = evaluate_policy(agent, pool, args.tasks, seed=config.eval.seed)
    pool.close()
    report = {
        "model": model_name,
        "env": env_id,
        "env_kwargs": env_kwargs,
        "panel": args.panel,
        "panel_hash": result.pop("panel_hash"),
        "tasks": int(result["episodes"]),
        "backend": backend_name,
        "config": args.config,
        "agent": config.agent.model_dump(),
        "seed": config.eval.seed,
        "seconds": time.perf_counter() - t0,
        **result,
    }
    out = args.out
    if out is None and args.run:
        out = str(Path(args.run) / "eval" / f"{args.panel}{'_start' if args.start else ''}.json")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1))
    summary = {k: v for k, v in report.items() if k != "per_task"}
    print(json.dumps(summary))
    if out:
        print(f"report: {out}", file=sys.stderr)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
