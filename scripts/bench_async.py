"""Rollout benchmark case (d): sync against async (S = 1) training with SmolLM2 on vLLM.

The env is case (c)'s: KeyRooms with an ARTIFICIAL 50 ms latency after every env step (labelled
as such in the output), on the ``process`` env backend in shards of 8. One vLLM server (started
here, development mode) serves both runs through ``backend.replicas``; before each run the
learner's fresh weights are loaded into it, so both start from the same policy. Each run trains
``--iterations`` iterations of 4 groups x 8 episodes with LoRA; the figures are the mean
iteration time (the first iteration, with nothing to overlap yet, is reported apart), the
rollout success, and for async the staleness and clipped-weight fraction.

Both runs are measured in one invocation, one after the other. Run it alone, under the
big-memory lock::

    flock /tmp/cg-bigmem.lock .venv/bin/python scripts/bench_async.py --out runs/bench_async
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

#: Labelled in every JSON line: the latency is added on purpose, it is not KeyRooms' own.
LATENCY_LABEL = "KeyRooms small + ARTIFICIAL 50 ms env-step latency"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=2, help="KeyRooms episode length cap")
    p.add_argument("--latency", type=float, default=0.05, help="artificial env-step seconds")
    p.add_argument("--env-backend", default="process")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--modes", default="sync,async", help="comma-separated subset of sync,async")
    p.add_argument("--out", default="runs/bench_async", help="run folders and results.jsonl")
    return p


def _overrides(args: argparse.Namespace, mode: str, url: str, run_dir: Path) -> list[str]:
    return [
        "model.name=smollm2-135m",
        "env.id=creditgym/KeyRooms-v0",
        f"env.kwargs={{level: small, max_steps: {args.max_steps}}}",
        "agent.history_length=0",
        "agent.max_prompt_tokens=768",
        f"agent.max_new_tokens={args.max_new_tokens}",
        "agent.response_prefix=<action>",
        "agent.stop=['</action>']",
        "agent.action_match=admissible",
        "backend.name=vllm-server",
        f"backend.replicas=['{url}']",
        "backend.kwargs={export_lm_head: true}",
        "rollout.tasks_per_iteration=4",
        "rollout.group_size=8",
        f"rollout.env_backend={args.env_backend}",
        "rollout.envs_per_shard=8",
        f"rollout.mode={mode}",
        "rollout.max_staleness=1",
        "credit.name=grpo",
        "learner.lr=1.0e-4",
        "learner.micro_batch_tokens=2048",
        f"train.iterations={args.iterations}",
        "train.checkpoint_every=0",
        "eval.tasks=0",
        "logging.tensorboard=false",
        "logging.plot=false",
        "logging.progress=false",
        f"run_dir={run_dir}",
    ]


def run_mode(args: argparse.Namespace, mode: str, url: str) -> dict[str, Any]:
    """Train one run in ``mode`` against the server at ``url``; its figures."""
    from creditgym.trainers.config import load_config
    from creditgym.trainers.logger import read_metrics
    from creditgym.trainers.shards import EnvPool
    from creditgym.trainers.train import Trainer

    run_dir = Path(args.out) / mode
    cfg = load_config(None, _overrides(args, mode, url, run_dir))
    trainer = Trainer(cfg, argv=sys.argv)
    t0 = time.perf_counter()
    try:
        trainer.build()
        b, g = cfg.rollout.tasks_per_iteration, cfg.rollout.group_size
        trainer.pool.close()  # the same envs again, with the artificial step latency
        trainer.pool = EnvPool(
            cfg.env.id,
            b * g,
            split=cfg.env.train_split,
            env_kwargs=cfg.env.kwargs,
            backend=cfg.rollout.env_backend,
            envs_per_shard=cfg.rollout.envs_per_shard,
            step_latency_s=args.latency,
        )
        trainer.backend.sync_weights(trainer.learner)  # the server starts from these weights
        t_run = time.perf_counter()
        trainer.run()
        wall = time.perf_counter() - t_run
    finally:
        trainer.close()
    records = [r for r in read_metrics(trainer.folder.metrics) if "time/iteration" in r]
    times = [float(r["time/iteration"]) for r in records]
    steady = times[1:] or times
    out: dict[str, Any] = {
        "case": "d",
        "env": LATENCY_LABEL,
        "mode": mode,
        "max_staleness": cfg.rollout.max_staleness if mode == "async" else None,
        "episodes_per_iteration": b * g,
        "iterations": len(records),
        "iteration_s_first": times[0] if times else None,
        "iteration_s_mean_after_first": statistics.mean(steady) if steady else None,
        "iteration_s_all": times,
        "train_wall_s": wall,
        "setup_s": t_run - t0,
        "success_mean": statistics.mean(float(r["rollout/success"]) for r in records),
        "success_per_iteration": [float(r["rollout/success"]) for r in records],
        "rollout_wait_s_mean": statistics.mean(float(r["time/generate"]) for r in records),
        "learn_s_mean": statistics.mean(
            float(r["time/prepare"]) + float(r["time/update"]) + float(r["time/sync"])
            for r in records
        ),
    }
    if mode == "async":
        out["staleness_mean"] = statistics.mean(
            float(r.get("rollout/staleness_mean", 0.0)) for r in records
        )
        out["tis_clip_frac_mean"] = statistics.mean(
            float(r.get("train/tis_clip_frac", 0.0)) for r in records
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (a timeout, a kill) unwinds like an exception, so the server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("sync", "async")]
    if bad:
        raise SystemExit(f"unknown modes {bad}; choose from sync, async")
    from creditgym.agents.backends.vllm import VLLMServerBackend
    from creditgym.agents.models import resolve_model

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    server = VLLMServerBackend(resolve_model("smollm2-135m"), max_model_len=1024, kv_cache_gb=1.0)
    start_s = time.perf_counter() - t0
    results = []
    try:
        for mode in modes:
            result = run_mode(args, mode, server.base_url)
            result["server_start_s"] = start_s
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        server.close()
    with (out_dir / "results.jsonl").open("a") as fh:
        for r in results:
            fh.write(json.dumps(r) + "\n")
    print(f"\ncase (d): {LATENCY_LABEL}, SmolLM2-135M on vLLM (CPU), 4 x 8 episodes, LoRA")
    print(f"{'mode':<10}{'iter 1 (s)':>12}{'iter 2+ (s)':>13}{'success':>10}{'wait (s)':>10}")
    for r in results:
        label = r["mode"] + (f" S={r['max_staleness']}" if r["mode"] == "async" else "")
        print(
            f"{label:<10}{r['iteration_s_first']:>12.1f}{r['iteration_s_mean_after_first']:>13.1f}"
            f"{r['success_mean']:>10.3f}{r['rollout_wait_s_mean']:>10.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
