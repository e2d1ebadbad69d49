"""The learner's speed on one demo-config iteration: prefix packing on against off, in one run.

1. The batch: one training iteration's rollout under a config (default ``scripts/configs/demo.yaml``).
   ``--policy model`` runs the config (warm start, then one rollout on the "hf" backend unless
   ``--backend`` says otherwise); ``--policy scripted`` plays the same tasks in the same prompt
   format with a noisy expert (the env's expert action, a random admissible one with probability
   ``--eps``), which takes seconds instead of minutes. The groups are pickled to ``--batch`` and
   reused when that file exists, so repeated runs time the same samples.
2. On that batch, from the same learner state each time, ``prepare`` + credit + ``update`` with
   packing off and on (alternating, ``--repeats`` times each); both sides get the same
   no-needless-forward savings (the old-log-prob pass is deferred into ``update`` when the credit
   module needs nothing before credit). Reported per side: seconds of ``prepare`` and ``update``,
   tokens forwarded in each, and tokens forwarded per trained token. ``--forced-old-pass`` also
   times packing with the old-log-prob pass forced before credit (what the deferral saves).
3. ``--ranks N``: one ``prepare`` + ``update`` of the same global batch on 1 and on N ranks
   (torchrun, gloo; `creditgym.trainers.dp_check.step_times`, slowest rank). On 2 cores, 2 ranks
   cannot be faster.

Run it alone (it loads the real model):
    nice -n 10 .venv/bin/python scripts/bench_learner.py --policy scripted \
        --batch runs/bench_learner/scripted.pkl --out runs/bench_learner/result.json
Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def record_batch(config_path: str, overrides: list[str], batch: Path) -> dict:
    """Roll out one iteration under the config (warm start included) and pickle the groups."""
    from creditgym.trainers.config import load_config
    from creditgym.trainers.train import Trainer

    cfg = load_config(config_path, overrides)
    run_dir = batch.parent / "run"
    trainer = Trainer(cfg, run_dir=run_dir, argv=["bench_learner"])
    t0 = time.perf_counter()
    trainer.build()
    build_s = time.perf_counter() - t0
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    groups, _ = trainer._rollout(1, times)
    rollout_s = time.perf_counter() - t0
    for pool in (trainer.pool, trainer.eval_pool):
        if pool is not None:
            pool.close()
    record = {
        "groups": groups,
        "model_path": trainer.model_path,
        "config": config_path,
        "overrides": overrides,
        "build_s": build_s,
        "rollout_s": rollout_s,
    }
    batch.parent.mkdir(parents=True, exist_ok=True)
    with open(batch, "wb") as f:
        pickle.dump(record, f)
    return record


def scripted_batch(config_path: str, overrides: list[str], batch: Path, eps: float) -> dict:
    """One iteration's groups in the config's exact prompt format, played by a seeded policy that
    takes the env expert's action with probability 1 - ``eps`` and a random admissible action
    otherwise (a stand-in for a warm-started model's play; no generation). The model trained on
    them is the config's (no warm start)."""
    import numpy as np
    from transformers import AutoTokenizer

    from creditgym.agents.models import resolve_model
    from creditgym.trainers.config import load_config
    from creditgym.trainers.rollout import EnvPool, collect
    from creditgym.trainers.seeding import group_seeds
    from creditgym.trainers.warmstart import DemonstrationAgent
    from creditgym.trainers.wiring import make_agent

    cfg = load_config(config_path, overrides)
    model_path = resolve_model(cfg.model.name)
    llm, _ = make_agent(cfg.agent, None, AutoTokenizer.from_pretrained(model_path))
    rng = np.random.default_rng(cfg.seed)

    class NoisyExpert(DemonstrationAgent):
        def act(self, contexts):
            turns = super().act(contexts)
            out = []
            for ctx, turn in zip(contexts, turns, strict=True):
                if ctx.admissible_actions and rng.random() < eps:
                    action = str(rng.choice(list(ctx.admissible_actions)))
                    text = self.response_text(action)
                    ids = list(self.llm.tokenizer.encode(text, add_special_tokens=False))
                    turn = type(turn)(
                        action=action,
                        text=text,
                        prompt_ids=turn.prompt_ids,
                        response_ids=ids,
                        logprobs=[0.0] * len(ids),
                    )
                out.append(turn)
            return out

    b, g = cfg.rollout.tasks_per_iteration, cfg.rollout.group_size
    with EnvPool(cfg.env.id, b * g, split=cfg.env.train_split, env_kwargs=cfg.env.kwargs) as pool:
        tasks = [int(t) for t in rng.permutation(len(pool.panel))[:b]]
        groups = collect(pool, NoisyExpert(llm), tasks, g, group_seeds(cfg.seed, 1, b)).groups
    record = {
        "groups": groups,
        "model_path": model_path,
        "config": config_path,
        "overrides": [*overrides, "warmstart.episodes=0"],
        "policy": f"noisy expert, eps={eps}",
    }
    batch.parent.mkdir(parents=True, exist_ok=True)
    with open(batch, "wb") as f:
        pickle.dump(record, f)
    return record


def time_side(learner, groups, module, state, *, packed: bool, force_old: bool) -> dict:
    """One prepare + credit + update from ``state``; seconds and tokens forwarded."""
    learner.load_state_dict(copy.deepcopy(state))
    learner.pack_tokens = learner.config.pack_tokens if packed else 0
    needs = set(module.needs) | ({"old_logprobs"} if force_old else set())
    t0 = time.perf_counter()
    prep = learner.prepare(groups, needs)
    prepare_s = time.perf_counter() - t0
    adv = module(groups)
    t0 = time.perf_counter()
    upd = learner.update(groups, adv)
    update_s = time.perf_counter() - t0
    fwd_prep = prep["train/prepare_tokens_forwarded"]
    fwd_upd = upd["train/update_tokens_forwarded"]
    return {
        "prepare_s": prepare_s,
        "update_s": update_s,
        "total_s": prepare_s + update_s,
        "prepare_tokens_forwarded": fwd_prep,
        "update_tokens_forwarded": fwd_upd,
        "trained_tokens": upd["train/tokens"],
        "forwarded_per_trained_token": (fwd_prep + fwd_upd) / max(upd["train/tokens"], 1.0),
        "pg_loss": upd["train/pg_loss"],
        "grad_norm": upd["train/grad_norm"],
        "old_entropy": upd.get("train/old_entropy", prep.get("train/old_entropy")),
        "logprob_mismatch_abs": upd.get(
            "train/logprob_mismatch_abs", prep.get("train/logprob_mismatch_abs")
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="scripts/configs/demo.yaml")
    p.add_argument("--backend", default="hf", help="generation backend for the recorded rollout")
    p.add_argument("--batch", type=Path, default=Path("runs/bench_learner/batch.pkl"))
    p.add_argument("--record-only", action="store_true", help="record the batch and stop")
    p.add_argument(
        "--policy",
        default="model",
        help="who plays the recorded iteration: 'model' (the config's run: warm start + rollout) "
        "or 'scripted' (a noisy expert in the same prompt format; seconds, not minutes)",
    )
    p.add_argument("--eps", type=float, default=0.4, help="scripted: random-action probability")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per side (alternating)")
    p.add_argument("--forced-old-pass", action="store_true")
    p.add_argument(
        "--ranks",
        type=int,
        default=0,
        help="also time one prepare + update of the batch on 1 and on this many ranks (gloo, "
        "creditgym.trainers.dp_check); 0 skips it",
    )
    p.add_argument("--out", type=Path)
    p.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = p.parse_args()

    import numpy as np
    import torch

    from creditgym import credit
    from creditgym.credit.trajectory import flat_steps
    from creditgym.trainers.config import load_config
    from creditgym.trainers.wiring import make_learner

    overrides = [f"backend.name={args.backend}", *args.overrides]
    if args.batch.exists():
        with open(args.batch, "rb") as f:
            record = pickle.load(f)
    elif args.policy == "scripted":
        record = scripted_batch(args.config, overrides, args.batch, args.eps)
    else:
        record = record_batch(args.config, overrides, args.batch)
    if args.record_only:
        return
    groups = record["groups"]
    cfg = load_config(record["config"], record["overrides"])
    module = credit.make(cfg.credit.name, **cfg.credit.options)
    learner = make_learner(cfg, record["model_path"], module)
    state = copy.deepcopy(learner.state_dict())
    samples = learner.build_samples(groups)
    steps = flat_steps(groups)
    report: dict = {
        "config": record["config"],
        "overrides": record["overrides"],
        "model_path": record["model_path"],
        "policy": record.get("policy", "model"),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m_start": os.getloadavg()[0],
        "steps": len(steps),
        "samples": len(samples),
        "sample_tokens": int(sum(len(s.ids) for s in samples)),
        "response_tokens": int(sum(s.num_tokens for s in samples)),
        "mean_prompt_tokens": float(np.mean([len(s.prompt_ids) for s in steps])),
        "credit": cfg.credit.name,
        "credit_needs": sorted(module.needs),
        "pack_tokens": learner.config.pack_tokens,
        "micro_batch_tokens": learner.config.micro_batch_tokens,
        "mini_batches": learner.config.mini_batches,
        "packing_supported": bool(learner.pack_tokens),
    }
    sides = [("unpacked", False, False), ("packed", True, False)]
    if args.forced_old_pass:
        sides.append(("packed_forced_old_pass", True, True))
    runs: dict[str, list[dict]] = {name: [] for name, *_ in sides}
    for _ in range(args.repeats):
        for name, packed, force in sides:
            runs[name].append(
                time_side(learner, groups, module, state, packed=packed, force_old=force)
            )
            print(name, json.dumps(runs[name][-1]), file=sys.stderr, flush=True)
    for name, rs in runs.items():
        best = {k: statistics.median(r[k] for r in rs) for k in rs[0] if rs[0][k] is not None}
        report[name] = best | {"runs": rs}
    u, k = report["unpacked"], report["packed"]
    report["speedup_prepare_plus_update"] = u["total_s"] / k["total_s"]
    report["forwarded_ratio"] = k["forwarded_per_trained_token"] / u["forwarded_per_trained_token"]
    if args.ranks:
        import dataclasses

        from creditgym.trainers.dp_check import step_times

        options = dataclasses.asdict(cfg.resolved_learner())
        options["device"] = "cpu"
        report["ranks"] = step_times(
            groups,
            module(groups).values,
            nprocs=(1, args.ranks),
            updates=1,
            model=record["model_path"],
            learner=options,
        )
    report["load_avg_1m_end"] = os.getloadavg()[0]
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
