"""Load on the OpenEnv server: N concurrent sessions x M steps each, through `creditgym/OpenEnv-v0`.

    python scripts/bench_openenv.py --env creditgym/KeyRooms-v0 --env-kwargs '{"level": "small"}'
    python scripts/bench_openenv.py --env creditgym/WebShop-v0

Starts one server (`scripts/serve_openenv.py`, under the interpreter that holds ``openenv``) on a
free 127.0.0.1 port, then runs `--sessions` client threads; each plays seeded random admissible
actions for `--steps` steps, resetting when an episode ends. Prints one JSON line: errors (a
raised call or an ``info["error"]``), step latency p50 / p99 in ms, and steps/s over the whole
run. Every request loop is bounded by `--steps`, and the server stops at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np

from creditgym import envs
from creditgym.envs.remote.launch import OpenEnvServer


def session(url: str, index: int, steps: int, split: str, out: dict) -> None:
    """One client: `steps` timed steps of random admissible actions (resets are not timed)."""
    rng = np.random.default_rng(index)
    latencies, errors = [], []
    env = None
    try:
        env = envs.make("creditgym/OpenEnv-v0", base_url=url, split=split)
        _, info = env.reset(seed=index)
        episode = 0
        for _ in range(steps):
            admissible = info.get("admissible_actions") or ["look"]
            action = str(rng.choice(admissible))
            start = time.perf_counter()
            try:
                _, _, terminated, truncated, info = env.step(action)
            except Exception as e:  # counted, then the session starts a new episode
                errors.append(repr(e))
                terminated = True
            latencies.append(time.perf_counter() - start)
            if "error" in info:
                errors.append(info["error"])
            if terminated or truncated:
                episode += 1
                _, info = env.reset(seed=index * 1000 + episode)
    except Exception as e:
        errors.append(repr(e))
    finally:
        if env is not None:
            env.close()
    out[index] = (latencies, errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--env-kwargs", default="{}")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--split", default="train")
    args = parser.parse_args(argv)
    kwargs = json.loads(args.env_kwargs)
    server_args = ("--max-sessions", str(args.sessions))
    with OpenEnvServer(args.env, kwargs, *server_args, ready_timeout=300) as url:
        # One untimed episode first, so the server's lazy setup (catalog, shop) is not measured.
        warm = envs.make("creditgym/OpenEnv-v0", base_url=url, split=args.split)
        warm.reset(seed=0)
        warm.close()
        results: dict[int, tuple[list[float], list[str]]] = {}
        threads = [
            threading.Thread(target=session, args=(url, i, args.steps, args.split, results))
            for i in range(args.sessions)
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    latencies = np.array([x for lat, _ in results.values() for x in lat]) * 1000
    errors = [e for _, errs in results.values() for e in errs]
    report = {
        "env": args.env,
        "env_kwargs": kwargs,
        "sessions": args.sessions,
        "steps_per_session": args.steps,
        "steps": int(latencies.size),
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": round(float(np.percentile(latencies, 50)), 2) if latencies.size else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 2) if latencies.size else None,
        "steps_per_s": round(latencies.size / wall, 1),
        "wall_s": round(wall, 1),
    }
    print(json.dumps(report))
    return 0 if not errors and latencies.size == args.sessions * args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
