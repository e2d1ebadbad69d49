"""How well the Monte-Carlo reference recovers the exact A^pi on KeyRooms, for several K.

    python scripts/check_mc_reference.py --level small --k 2,4,8,16 --seeds 2

Per seed: the start policy of the credit benchmark (softmax(beta A*), beta calibrated to success
0.2 within the level's step limit) plays one batch; the MC reference (`creditgym.trainers.reference`)
is computed on that batch once per K (same sampled states); each is compared with the exact A^pi
of the same policy over the steps it covers: Pearson r, the split-half reliability, and r
corrected by it (the exact A^pi scored as if it were a method: about 1 when the correction is
right). The exact values ignore the step limit, so the env runs with ``--max-steps`` (200: with
gamma 0.95 the limit no longer matters); ``--max-steps 0`` keeps the level's own limit, to show
what the limit does. Prints one JSON line per K.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

from creditgym.trainers.reference import fidelity_scores, mc_reference, pearson
from creditgym.trainers.rollout import EnvPool, collect


def _bench():
    path = Path(__file__).resolve().parent / "benchmark_credit.py"
    spec = importlib.util.spec_from_file_location("_benchmark_credit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--level", default="small")
    p.add_argument("--k", default="2,4,8,16", help="continuation counts, comma separated")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--states", type=int, default=16, help="sampled (group, state) units")
    p.add_argument("--max-steps", type=int, default=200, help="0: the level's own limit")
    p.add_argument("--gamma", type=float, default=0.95)
    a = p.parse_args(argv)
    bench = _bench()
    ks = [int(k) for k in a.k.split(",")]
    kwargs = {"level": a.level} | ({"max_steps": a.max_steps} if a.max_steps else {})
    level_limit = EnvPool("creditgym/KeyRooms-v0", 1, env_kwargs={"level": a.level})
    horizon = level_limit.description.max_steps
    level_limit.close()
    pool = EnvPool("creditgym/KeyRooms-v0", a.groups * a.group_size, env_kwargs=kwargs)
    tasks = list(range(a.groups))
    exact = bench.ExactValues(pool, tasks, a.gamma)
    beta = exact.calibrate(0.2, horizon)
    pooled: dict[int, list] = {k: [] for k in ks}
    for seed in range(a.seeds):
        agent = bench.TabularSoftmaxAgent(lr=1.0, seed=seed)
        exact.warm_start(agent, beta)
        seeds = [seed * 1000 + b for b in range(a.groups)]
        batch = collect(pool, agent, tasks, a.group_size, seeds)
        ref = exact.step_advantages(agent, batch.groups, tasks)
        for k in ks:
            agent.rng = np.random.default_rng([seed, k])
            mc = mc_reference(
                pool, agent, batch.groups, k=k, n_states=a.states, gamma=a.gamma,
                rng=np.random.default_rng(seed),
            )  # fmt: skip
            pooled[k].append((batch.groups, ref, mc))
    pool.close()
    out = []
    for k in ks:
        parts = pooled[k]
        groups = [g for gs, _r, _m in parts for g in gs]
        ref = np.concatenate([r for _g, r, _m in parts])
        mc = np.concatenate([m.values for _g, _r, m in parts])
        halves = tuple(np.concatenate([m.halves[i] for _g, _r, m in parts]) for i in (0, 1))
        scores = fidelity_scores(groups, ref, mc, halves)
        row = {
            "K": k,
            "level": a.level,
            "max_steps": a.max_steps or horizon,
            "beta": round(beta, 4),
            "steps": int(np.isfinite(mc).sum()),
            "pearson_mc_exact": pearson(mc, ref),
            "per_seed": [pearson(m.values, r) for _g, r, m in parts],
            "reliability": scores["reliability"],
            "pearson_corrected": scores["pearson_corrected"],
            "pairwise_exact_vs_mc": scores["pairwise"],
            "pairs": scores["pairs"],
            "policy_turns": float(sum(m.stats.get("generated", 0.0) for _g, _r, m in parts)),
        }
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    main()
