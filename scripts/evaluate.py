"""Evaluate a model (or a training run's latest checkpoint) on a task panel; write a JSON report.

    python scripts/evaluate.py --model smollm2-135m --env creditgym/KeyRooms-v0 \
        --env-kwargs '{"level": "small"}' --panel valid --tasks 50 --out report.json
    python scripts/evaluate.py --run runs/demo --panel test --tasks 100
    python scripts/evaluate.py --run runs/demo --start --panel test --tasks 100   # before training
    python scripts/evaluate.py --model smollm2-135m --config scripts/configs/demo.yaml --tasks 64

One episode per task on the first ``--tasks`` tasks of the panel, with fixed reset seeds, so two
reports with the same panel hash are comparable. The report holds success overall and per task
type, mean return, invalid-action rate, the per-task results, the panel hash and the settings.
``--model`` takes "smollm2-135m" (default), "tiny", a local Hugging Face folder or a hub id;
``--backend openai`` (evaluation only) takes ``--backend-kwargs '{"base_url": ...}'``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from creditgym.trainers.config import AgentConfig, ConfigError
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


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--env", help="registered env id (default: the run's or the config's)")
    p.add_argument("--env-kwargs", default=None, help="JSON dict for gymnasium.make")
    p.add_argument("--panel", default="valid", help="split: train, valid or test")
    p.add_argument("--tasks", type=int, default=50, help="first N tasks of the panel")
    p.add_argument("--backend", default="hf", help="hf, vllm, vllm-server or openai")
    p.add_argument("--backend-kwargs", default="{}", help="JSON dict for the backend")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    p.add_argument("--seed", type=int, default=1234, help="reset and sampling seed")
    p.add_argument("--history-length", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--output-format", default=None, help="action, search, tool or hiper")
    p.add_argument("--out", help="report path (default: <run>/eval/<panel>.json or stdout only)")
    args = p.parse_args(argv)
    backend_kwargs = _json_dict(p, args.backend_kwargs, "--backend-kwargs")
    cli_env_kwargs = (
        None if args.env_kwargs is None else _json_dict(p, args.env_kwargs, "--env-kwargs")
    )
    if not args.run and not args.env and not args.config:
        p.error("--env (or --config) is required with --model")
    if args.config and args.run:
        p.error("--config goes with --model; a --run has its own config")
    if args.start and not args.run:
        p.error("--start needs --run")

    import torch

    from creditgym.agents.backends import make_backend
    from creditgym.trainers.seeding import seed_everything
    from creditgym.trainers.wiring import make_agent

    seed_everything(args.seed)
    config = None
    try:
        if args.run:
            from creditgym.trainers.run_folder import load_run_config

            config = load_run_config(args.run)
        elif args.config:
            from creditgym.trainers.config import load_config

            config = load_config(args.config)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    agent_cfg = config.agent if config else AgentConfig()
    env_id = args.env or (config.env.id if config else None)
    env_kwargs = cli_env_kwargs
    if env_kwargs is None:
        env_kwargs = config.env.kwargs if config else {}
    if args.run:
        from creditgym.trainers.train import Trainer

        trainer = Trainer(config, run_dir=args.run, resume=True)
        trainer.build(pools=False)
        iteration = 0 if args.start else trainer.load_latest_weights()
        agent = trainer.agent
        backend = trainer.backend
        model_name = f"{args.run} (iteration {iteration})"
    else:
        from transformers import AutoTokenizer

        from creditgym.agents.models import resolve_model

        model_name = args.model or "smollm2-135m"
        path = resolve_model(model_name)
        backend = make_backend(args.backend, path, **backend_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
        agent = None
    overrides = {
        k: v
        for k, v in {
            "history_length": args.history_length,
            "max_new_tokens": args.max_new_tokens,
            "output_format": args.output_format,
            "temperature": args.temperature,
        }.items()
        if v is not None
    }
    try:
        agent_cfg = AgentConfig.model_validate(agent_cfg.model_dump() | overrides)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if agent is None or overrides:
        agent, _ = make_agent(
            agent_cfg, backend, agent.tokenizer if agent is not None else tokenizer
        )
    pool = EnvPool(env_id, min(args.tasks, 64), split=args.panel, env_kwargs=env_kwargs)
    t0 = time.perf_counter()
    with torch.inference_mode():
        result = evaluate_policy(agent, pool, args.tasks, seed=args.seed)
    pool.close()
    report = {
        "model": model_name,
        "env": env_id,
        "env_kwargs": env_kwargs,
        "panel": args.panel,
        "panel_hash": result.pop("panel_hash"),
        "tasks": int(result["episodes"]),
        "backend": config.backend.name if args.run else args.backend,
        "config": args.config,
        "agent": agent_cfg.model_dump(),
        "seed": args.seed,
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
