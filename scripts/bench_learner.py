"""Measure the costs the learner's configs are sized from, on the real default model.

1. GGUF -> HF conversion of SmolLM2-135M-Instruct (in a fresh cache with ``--fresh-cache``) and
   the reload of the converted folder;
2. HF generation tokens/s for one batch of KeyRooms prompts (default 16 x 64 new tokens, fp32);
3. one KeyRooms rollout batch (demo size by default: 2 tasks x 4 rollouts), GiGPO advantages,
   and the learner's `prepare` + LoRA `update` on it.

Run it alone (it loads the real model):
    flock /tmp/cg-bigmem.lock .venv/bin/python scripts/bench_learner.py --fresh-cache
Prints one JSON object (also written to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fresh-cache", action="store_true", help="convert into a temporary cache")
    p.add_argument("--gen-batch", type=int, default=16)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--tasks", type=int, default=2)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=6)
    p.add_argument("--new-tokens", type=int, default=32, help="response tokens per rollout turn")
    p.add_argument("--micro-batch-tokens", type=int, default=4096)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    tmp = None
    if args.fresh_cache:
        tmp = tempfile.TemporaryDirectory(prefix="cg-bench-cache-")
        os.environ["CREDITGYM_CACHE"] = tmp.name

    import gymnasium
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from creditgym import credit
    from creditgym.agents.backends import SamplingConfig
    from creditgym.agents.backends.hf import HFBackend
    from creditgym.agents.base import Context
    from creditgym.agents.llm import LLMAgent
    from creditgym.agents.models import resolve_model
    from creditgym.trainers.learner import Learner, LearnerConfig
    from creditgym.trainers.rollout import EnvPool, collect

    report: dict[str, float | int | str] = {"torch_threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    path = resolve_model("smollm2-135m")
    report["convert_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    report["reload_s"] = time.perf_counter() - t0
    del model

    learner = Learner(LearnerConfig(micro_batch_tokens=args.micro_batch_tokens), path)
    backend = HFBackend(model=learner.model, tokenizer=learner.tokenizer, batch_size=args.gen_batch)
    report["lora_trainable_params"] = learner.trainable_parameters()

    # Generation: KeyRooms prompts, one batch.
    env_kwargs = {"level": "small", "max_steps": args.max_steps}
    env = gymnasium.make("creditgym/KeyRooms-v0", **env_kwargs).unwrapped
    try:
        contexts = []
        for i in range(args.gen_batch):
            obs, info = env.reset(options={"task_id": i})
            contexts.append(
                Context(
                    task=info["task"],
                    observation=obs,
                    admissible_actions=info["admissible_actions"],
                    family=env.family,
                )
            )
    finally:
        env.close()
    agent = LLMAgent(backend, learner.tokenizer)
    prompts = [agent._prompt(c) for c in contexts]
    sampling = SamplingConfig(max_new_tokens=args.gen_tokens, seed=0)
    backend.generate(prompts[:2], SamplingConfig(max_new_tokens=4, seed=0))  # warm-up
    gens = backend.generate(prompts, sampling)
    stats = backend.last_stats
    report.update(
        {
            "gen_batch": len(prompts),
            "gen_prompt_tokens_mean": float(np.mean([len(x) for x in prompts])),
            "gen_tokens": int(stats["tokens"]),
            "gen_s": stats["seconds"],
            "gen_tok_per_s": stats["tok_per_s"],
            "gen_finished_early": sum(g.finish_reason == "stop" for g in gens),
        }
    )

    # One demo-size training iteration's rollout + learner work.
    agent = LLMAgent(
        backend, learner.tokenizer, sampling=SamplingConfig(max_new_tokens=args.new_tokens, seed=1)
    )
    n = args.tasks * args.group_size
    with EnvPool("creditgym/KeyRooms-v0", n, env_kwargs=env_kwargs) as pool:
        t0 = time.perf_counter()
        batch = collect(pool, agent, list(range(args.tasks)), args.group_size, [0] * args.tasks)
        report["rollout_s"] = time.perf_counter() - t0
    groups = batch.groups
    module = credit.make("gigpo")
    t0 = time.perf_counter()
    prep = learner.prepare(groups, set(module.needs))
    report["prepare_s"] = time.perf_counter() - t0
    adv = module(groups)
    t0 = time.perf_counter()
    upd = learner.update(groups, adv)
    report["update_s"] = time.perf_counter() - t0
    samples = learner.build_samples(groups)
    report.update(
        {
            "batch_steps": int(batch.stats["steps"]),
            "batch_tokens": int(sum(len(s.ids) for s in samples)),
            "batch_response_tokens": int(sum(s.num_tokens for s in samples)),
            "logprob_mismatch_abs": prep.get("train/logprob_mismatch_abs", float("nan")),
            "optimizer_steps": upd["train/optimizer_steps"],
            "peak_rss_gb": _rss_gb(),
            "load_avg_1m": os.getloadavg()[0],
        }
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        learner.save_merged(d)
        report["save_merged_s"] = time.perf_counter() - t0
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
