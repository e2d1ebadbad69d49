"""Generation speed of the backends on the same prompts and batch, one after the other.

Each backend in ``--backends`` (default ``hf,vllm``) is built in turn in this one process, warmed
up with one short call, then timed over ``--repeats`` calls that each sample one completion for
every prompt of the batch. The prompts are real KeyRooms first observations rendered with the
model's chat template (the same kind of prompt the demo trains on). A backend is closed before
the next one starts, so they never compete for the two cores.

For the vLLM backends it also times engine/server start-up and one weight sync (export of the
HF model's weights + in-place reload), the cost paid after every training update.

Run it alone, under the big-memory lock (it loads the real model and vLLM)::

    flock /tmp/cg-bigmem.lock .venv/bin/python scripts/bench_generation.py
    flock /tmp/cg-bigmem.lock .venv/bin/python scripts/bench_generation.py \\
        --backends hf,vllm,vllm-server --out runs/bench_generation.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from creditgym.agents.backends import make_backend
from creditgym.agents.backends.base import SamplingConfig
from creditgym.agents.models import resolve_model

SYSTEM = (
    "You are an agent in a text game. Reply with your reasoning in <think>...</think> and then "
    "one admissible action in <action>...</action>."
)


def keyrooms_prompts(tokenizer: Any, batch: int, seed: int) -> list[list[int]]:
    """``batch`` chat-templated prompts built from KeyRooms (small) first observations."""
    from creditgym import envs

    env = envs.make("creditgym/KeyRooms-v0", level="small")
    prompts = []
    for i in range(batch):
        obs, info = env.reset(seed=seed + i)
        actions = info.get("admissible_actions") or []
        user = f"{obs}\n\nAdmissible actions: {', '.join(actions)}\nWhat do you do next?"
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    env.close()
    return prompts


def bench_backend(
    name: str,
    model_path: str,
    prompts: list[list[int]],
    sampling: SamplingConfig,
    repeats: int,
    sync_model: Any,
) -> dict[str, Any]:
    """Build one backend, time start-up, generation and (vLLM) one weight sync, then close it."""
    t0 = time.perf_counter()
    backend = make_backend(name, model_path)
    start = time.perf_counter() - t0
    result: dict[str, Any] = {"backend": name, "start_s": round(start, 2)}
    try:
        backend.generate(prompts[:2], SamplingConfig(max_new_tokens=4, seed=sampling.seed))
        runs = []
        for r in range(repeats):
            config = SamplingConfig(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_new_tokens=sampling.max_new_tokens,
                seed=None if sampling.seed is None else sampling.seed + r,
            )
            t = time.perf_counter()
            gens = backend.generate(prompts, config)
            seconds = time.perf_counter() - t
            tokens = sum(len(g.token_ids) for g in gens)
            runs.append({"seconds": round(seconds, 3), "tokens": tokens})
            print(f"  {name} run {r}: {tokens} tokens in {seconds:.2f} s", flush=True)
        total_tokens = sum(r["tokens"] for r in runs)
        total_seconds = sum(r["seconds"] for r in runs)
        result.update(
            runs=runs,
            tok_per_s=round(total_tokens / total_seconds, 2),
            median_run_s=round(statistics.median(r["seconds"] for r in runs), 3),
        )
        if name != "hf" and sync_model is not None:
            seconds = backend.sync_weights(sync_model)
            result["sync_s"] = round(seconds, 3)
            result["sync_split_s"] = {
                k: round(v, 3) for k, v in getattr(backend, "last_sync", {}).items()
            }
    finally:
        backend.close()
        del backend
        gc.collect()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="model name or local HF folder")
    parser.add_argument("--backends", default="hf,vllm", help="comma-separated backend names")
    parser.add_argument("--batch", type=int, default=16, help="prompts per generate call")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per backend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sync", action="store_true", help="skip the weight-sync timing")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompts = keyrooms_prompts(tokenizer, args.batch, args.seed)
    sampling = SamplingConfig(
        temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    sync_model = None
    if not args.no_sync:
        sync_model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lengths = [len(p) for p in prompts]
    print(
        f"model {model_path}\nbatch {args.batch} x {args.max_new_tokens} new tokens, prompts "
        f"{min(lengths)}-{max(lengths)} tokens, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    results = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        print(f"[{name}]", flush=True)
        results.append(bench_backend(name, model_path, prompts, sampling, args.repeats, sync_model))
        print(f"  {json.dumps(results[-1])}", flush=True)
    report = {
        "model": model_path,
        "batch": args.batch,
        "max_new_tokens": args.max_new_tokens,
        "prompt_tokens": {"min": min(lengths), "max": max(lengths)},
        "machine": {"python": platform.python_version(), "cpus": torch.get_num_threads()},
        "results": results,
    }
    by_name = {r["backend"]: r for r in results}
    if "hf" in by_name:
        for r in results:
            if r["backend"] != "hf":
                r["speedup_vs_hf"] = round(r["tok_per_s"] / by_name["hf"]["tok_per_s"], 2)
    print("\nbackend       start s   tok/s   x hf   sync s")
    for r in results:
        print(
            f"{r['backend']:<12} {r['start_s']:>8.1f} {r['tok_per_s']:>7.1f} "
            f"{r.get('speedup_vs_hf', 1.0):>6.2f} {r.get('sync_s', float('nan')):>8.2f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # vLLM spawns worker processes: keep this guard
    sys.exit(main())
