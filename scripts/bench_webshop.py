"""WebShop performance figures; prints one JSON line per measurement.

    python scripts/bench_webshop.py load --sessions 16 --steps 200   # one server, N threads
    python scripts/bench_webshop.py catalog --sizes 1000,100000      # build times
    python scripts/bench_webshop.py search --n-products 100000       # BM25 index + query latency
    python scripts/bench_webshop.py browser --episodes 5             # seconds per browser step
    python scripts/bench_webshop.py random_clicker --episodes 100    # naive baseline

``load``: N text-mode envs (one per thread) share one server; each takes --steps steps, half
expert and half random admissible actions, resetting when an episode ends. It reports total
steps per second, per-step latency p50/p99 and the number of episodes that ended with an error.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time

import numpy as np

from creditgym.envs.webshop import WebShopEnv, generate_catalog


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def bench_load(sessions: int, steps: int, n_products: int) -> dict:
    pool = [WebShopEnv(split="train", n_products=n_products) for _ in range(sessions)]
    pool[0].reset(options={"task_id": 0})  # start the shared server before timing
    latencies: list[list[float]] = [[] for _ in range(sessions)]
    errors: list[str] = []
    episodes = [0] * sessions

    def run(i: int) -> None:
        env, rng = pool[i], random.Random(i)
        try:
            _, info = env.reset(options={"task_id": i % len(env.panel)})
            for _ in range(steps):
                action = env.expert_action()
                acts = [a for a in info["admissible_actions"] if not a.startswith("search[<")]
                if acts and rng.random() < 0.5:
                    action = rng.choice(acts)
                t = time.perf_counter()
                _, _, term, trunc, info = env.step(action or "click[back to search]")
                latencies[i].append(time.perf_counter() - t)
                if "error" in info:
                    errors.append(info["error"])
                if term or trunc:
                    episodes[i] += 1
                    _, info = env.reset(options={"task_id": rng.randrange(len(env.panel))})
        except Exception as exc:  # counted, reported
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(sessions)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    flat = [x for lat in latencies for x in lat]
    for env in pool:
        env.close()
    return {
        "bench": "load",
        "sessions": sessions,
        "steps_per_session": steps,
        "steps": len(flat),
        "episodes": sum(episodes),
        "errors": len(errors),
        "steps_per_s": round(len(flat) / wall, 1),
        "latency_p50_ms": round(1000 * _pct(flat, 50), 2),
        "latency_p99_ms": round(1000 * _pct(flat, 99), 2),
        "wall_s": round(wall, 2),
    }


def bench_catalog(sizes: list[int]) -> list[dict]:
    out = []
    for n in sizes:
        start = time.perf_counter()
        cat = generate_catalog(n, seed=0)
        out.append(
            {
                "bench": "catalog",
                "products": n,
                "goals": len(cat.goals),
                "build_s": round(time.perf_counter() - start, 2),
            }
        )
    return out


def bench_search(n_products: int, queries: int) -> dict:
    from creditgym.envs.webshop.app import SearchEngine

    cat = generate_catalog(n_products, seed=0)
    start = time.perf_counter()
    engine = SearchEngine(cat.products)
    index_s = time.perf_counter() - start
    times = []
    hits = 0
    for g in cat.goals[:queries]:
        t = time.perf_counter()
        found = engine.search(g.search_terms)
        times.append(time.perf_counter() - t)
        hits += g.asin in {cat.products[i].asin for i in found}
    return {
        "bench": "search",
        "products": n_products,
        "index_s": round(index_s, 2),
        "queries": len(times),
        "query_p50_ms": round(1000 * statistics.median(times), 2),
        "query_p99_ms": round(1000 * _pct(times, 99), 2),
        "target_in_top50": round(hits / len(times), 3),
    }


def bench_browser(episodes: int) -> dict:
    env = WebShopEnv(split="test", mode="browser")
    try:
        env.reset(options={"task_id": 0})  # start Chromium and the server before timing
        times, won = [], 0
        for task in range(episodes):
            env.reset(options={"task_id": task})
            for _ in range(15):
                t = time.perf_counter()
                _, _, term, _, info = env.step(env.expert_action() or "click[back to search]")
                times.append(time.perf_counter() - t)
                if term:
                    break
            won += info["won"]
    finally:
        env.close()
    return {
        "bench": "browser",
        "episodes": episodes,
        "steps": len(times),
        "success": won / episodes,
        "s_per_step_mean": round(statistics.mean(times), 3),
        "s_per_step_p50": round(statistics.median(times), 3),
    }


def bench_random_clicker(episodes: int, seed: int) -> dict:
    """A naive baseline the plain random agent cannot be: it searches with the instruction
    text verbatim, then clicks uniformly at random among the clickables."""
    env = WebShopEnv(split="test")
    rng = random.Random(seed)
    won, score, steps = 0, 0.0, 0
    try:
        for ep in range(episodes):
            _, info = env.reset(options={"task_id": ep % len(env.panel)})
            for _ in range(env.max_steps):
                acts = [a for a in info["admissible_actions"] if not a.startswith("search[")]
                action = f"search[{info['task']}]" if not acts else rng.choice(acts)
                _, _, term, trunc, info = env.step(action)
                steps += 1
                if term or trunc:
                    break
            won += info["won"]
            score += info["score"]
    finally:
        env.close()
    return {
        "bench": "random_clicker",
        "episodes": episodes,
        "success": round(won / episodes, 4),
        "mean_score": round(score / episodes, 4),
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["load", "catalog", "search", "browser", "random_clicker"])
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--n-products", type=int, default=1000)
    p.add_argument("--sizes", default="1000,100000")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--episodes", type=int, default=5)
    args = p.parse_args(argv)
    if args.what == "load":
        results = [bench_load(args.sessions, args.steps, args.n_products)]
    elif args.what == "catalog":
        results = bench_catalog([int(s) for s in args.sizes.split(",")])
    elif args.what == "search":
        results = [bench_search(args.n_products, args.queries)]
    elif args.what == "random_clicker":
        results = [bench_random_clicker(args.episodes, seed=0)]
    else:
        results = [bench_browser(args.episodes)]
    for r in results:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
