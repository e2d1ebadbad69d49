"""Rollout throughput of the env backends: one JSON line per run, then a table.

The driver is the random agent over admissible actions, so the figures measure env concurrency,
not a model. Every run plays 32 episodes (4 groups x 8) with `lockstep` on one pool.

    python scripts/bench_rollout.py                  # cases a, b, c
    python scripts/bench_rollout.py --cases c        # one case

Cases:
  a  ALFWorld, TextWorld engine backend: inprocess vs process and ray, 2 shards of 16
  b  WebShop in a browser (Chromium): 8 browsers, 4 shards of 2 (process), vs inprocess
  c  KeyRooms with an ARTIFICIAL 50 ms sleep after every env step: inprocess vs 4 shards of 8
  d  SmolLM2 on vLLM, sync vs async S=1 on case c's env: scripts/bench_async.py measures it;
     `--cases d` runs it from here (EXTRA_CASES)

Reported per run: wall seconds of the rollout (pool start-up excluded, shown as ``start_s``),
episodes/s, env steps/s, and p50/p99 latency of one env step (request to result, as the
rollout sees it, so a remote step includes the round trip).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from creditgym.agents.random_agent import RandomAgent
from creditgym.trainers.rollout import EnvPool, collect

GROUPS, GROUP_SIZE = 4, 8


class TimedPool:
    """An `EnvPool` whose `step_many` records each step's latency (request to result)."""

    def __init__(self, pool: EnvPool):
        self._pool = pool
        self.latencies: list[float] = []

    def step_many(self, calls: Sequence[tuple[int, str]]) -> list[Any]:
        starts: list[float] = []
        futures: list[Future] = []
        done: list[float] = [0.0] * len(calls)
        for i, (slot, action) in enumerate(calls):
            starts.append(time.perf_counter())
            fut = self._pool.submit_step(slot, action)
            fut.add_done_callback(lambda _f, i=i: done.__setitem__(i, time.perf_counter()))
            futures.append(fut)
        results = [f.result() for f in futures]
        self.latencies.extend(d - s for d, s in zip(done, starts))
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)] if xs else float("nan")


def run_one(case: str, label: str, env_id: str, env_kwargs: dict, backend: str, shard: int,
            latency: float = 0.0, seed: int = 0, envs: int = 32) -> dict[str, Any]:  # fmt: skip
    """Play 4 groups x 8 episodes on a pool of `envs` envs (32: one rollout of 4 groups; 8:
    four rollouts of one group); the measured figures as a dict."""
    n = envs
    per_round = envs // GROUP_SIZE
    t0 = time.perf_counter()
    options: dict[str, Any] = {"step_latency_s": latency} if latency else {}
    pool = EnvPool(env_id, n, env_kwargs=env_kwargs, backend=backend, envs_per_shard=shard,
                   **options)  # fmt: skip
    try:
        start_s = time.perf_counter() - t0
        timed = TimedPool(pool)
        agent = RandomAgent(seed)
        t0 = time.perf_counter()
        batches = []
        for first in range(0, GROUPS, per_round):
            tasks = list(range(first, first + per_round))
            seeds = [seed + g for g in tasks]
            batches.append(collect(timed, agent, tasks, GROUP_SIZE, seeds))
        wall = time.perf_counter() - t0
        counters = pool.take_counters()
    finally:
        pool.close()
    steps = len(timed.latencies)
    return {
        "case": case,
        "run": label,
        "env": env_id,
        "env_kwargs": env_kwargs,
        "backend": backend,
        "shards": -(-n // shard),
        "envs_per_shard": min(shard, n),
        "artificial_step_latency_s": latency,
        "episodes": GROUPS * GROUP_SIZE,
        "env_steps": steps,
        "success": round(statistics.mean(b.stats["success"] for b in batches), 3),
        "dropped": int(sum(b.stats["dropped"] for b in batches)),
        "start_s": round(start_s, 2),
        "wall_s": round(wall, 2),
        "episodes_per_s": round(GROUPS * GROUP_SIZE / wall, 2),
        "steps_per_s": round(steps / wall, 1),
        "step_p50_ms": round(1000 * statistics.median(timed.latencies), 1),
        "step_p99_ms": round(1000 * _percentile(timed.latencies, 0.99), 1),
        "faults": {k: v for k, v in counters.items() if v},
    }


ALFWORLD = ("creditgym/ALFWorld-v0", {"backend": "textworld"})
WEBSHOP = ("creditgym/WebShop-v0", {"mode": "browser"})
KEYROOMS = ("creditgym/KeyRooms-v0", {})

#: Case -> its runs: (label, (env id, kwargs), backend, envs per shard, artificial latency,
#: envs in the pool).
CASES: dict[str, list[tuple[str, tuple[str, dict], str, int, float, int]]] = {
    "a": [
        ("inprocess", ALFWORLD, "inprocess", 32, 0.0, 32),
        ("process 2x16", ALFWORLD, "process", 16, 0.0, 32),
        ("ray 2x16", ALFWORLD, "ray", 16, 0.0, 32),
    ],
    "b": [  # 8 browsers: four rollouts of one group of 8
        ("inprocess", WEBSHOP, "inprocess", 8, 0.0, 8),
        ("process 4x2", WEBSHOP, "process", 2, 0.0, 8),
    ],
    "c": [
        ("inprocess", KEYROOMS, "inprocess", 32, 0.05, 32),
        ("process 4x8", KEYROOMS, "process", 8, 0.05, 32),
        ("ray 4x8", KEYROOMS, "ray", 8, 0.05, 32),
    ],
}

#: Cases measured elsewhere: name -> callable(argv) printing its own JSON lines (case d, the
#: model-driven sync-vs-async comparison, belongs to scripts/bench_async.py).
EXTRA_CASES: dict[str, Callable[[list[str]], Any]] = {}


def _case_d(argv: list[str]) -> Any:
    """Case (d): scripts/bench_async.py with its defaults (it starts its own vLLM server)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("bench_async.py")
    spec = importlib.util.spec_from_file_location("bench_async", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([])


EXTRA_CASES["d"] = _case_d


def table(rows: list[dict[str, Any]]) -> str:
    head = ["case", "run", "shards", "wall_s", "episodes_per_s", "steps_per_s", "step_p50_ms",
            "step_p99_ms", "speed-up"]  # fmt: skip
    base: dict[str, float] = {}
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["backend"] == "inprocess":
            base[r["case"]] = r["steps_per_s"]
        speed = r["steps_per_s"] / base[r["case"]] if r["case"] in base else float("nan")
        cells = [r["case"], r["run"], f'{r["shards"]}x{r["envs_per_shard"]}', r["wall_s"],
                 r["episodes_per_s"], r["steps_per_s"], r["step_p50_ms"], r["step_p99_ms"],
                 f"{speed:.1f}x"]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if any(r["artificial_step_latency_s"] for r in rows):
        lines.append("(case c: KeyRooms with an ARTIFICIAL 50 ms sleep after every env step)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", default="a,b,c", help="comma-separated subset of a,b,c (and d)")
    p.add_argument("--runs", default=None, help="only runs whose label contains one of these")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = []
    for case in args.cases.split(","):
        if case in EXTRA_CASES:
            EXTRA_CASES[case](sys.argv[1:])
            continue
        if case not in CASES:
            p.error(f"unknown case {case!r}; known: {sorted(CASES) + sorted(EXTRA_CASES)}")
        for label, (env_id, kwargs), backend, shard, latency, envs in CASES[case]:
            if args.runs and not any(r in label for r in args.runs.split(",")):
                continue
            row = run_one(case, label, env_id, kwargs, backend, shard, latency, args.seed, envs)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
