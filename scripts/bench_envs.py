"""Play N episodes of an env with the random or oracle agent; print one JSON line of results.

    python scripts/bench_envs.py --env creditgym/KeyRooms-v0 --agent random --episodes 200 \
        --env-kwargs '{"level": "medium"}'

Episode i plays task i of the panel (cycling), seeded with i, in lock-step batches of --batch.
``steps_per_s`` is env steps per wall-clock second of the whole loop (agent included);
``env_steps_per_s`` counts only time inside `reset`/`step`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict

from creditgym import envs  # noqa: F401  (registers the creditgym envs)
from creditgym.agents import OracleAgent, RandomAgent
from creditgym.trainers.rollout import EnvPool, collect


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", required=True, help="registered env id, e.g. creditgym/KeyRooms-v0")
    p.add_argument("--agent", choices=["random", "oracle"], default="random")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--env-kwargs", default="{}", help="JSON dict passed to gymnasium.make")
    p.add_argument("--split", default=None, help="panel split (default: valid, or env-kwargs')")
    p.add_argument("--batch", type=int, default=16, help="episodes advanced in lock-step")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        kwargs = json.loads(args.env_kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        p.error(f"--env-kwargs must be a JSON object: {exc}")
    split = args.split or kwargs.pop("split", "valid")
    kwargs.pop("split", None)
    agent = OracleAgent() if args.agent == "oracle" else RandomAgent(seed=args.seed)

    totals: dict[str, float] = defaultdict(float)
    by_type: dict[str, list[float]] = defaultdict(list)
    start = time.perf_counter()
    with EnvPool(args.env, min(args.batch, args.episodes), split=split, env_kwargs=kwargs) as pool:
        n_panel = len(pool.panel)
        panel_hash = pool.panel.hash
        done = 0
        while done < args.episodes:
            b = min(args.batch, args.episodes - done)
            tasks = [(done + i) % n_panel for i in range(b)]
            seeds = [args.seed + done + i for i in range(b)]
            batch = collect(pool, agent, tasks, group_size=1, seeds=seeds)
            for g in batch.groups:
                for t in g.trajectories:
                    by_type[t.task_type].append(float(t.won))
                    totals["won"] += t.won
                    totals["return"] += sum(s.reward for s in t.steps)
                    totals["score"] += t.info.get("score", 0.0)
                    totals["invalid"] += sum(not s.valid for s in t.steps)
                    totals["episodes"] += 1
            totals["steps"] += batch.stats["steps"]
            totals["env_time"] += batch.stats["time_env_s"]
            totals["errors"] += batch.stats.get("env_errors", 0.0)
            done += b
    wall = time.perf_counter() - start
    n = max(totals["episodes"], 1)
    result = {
        "env": args.env,
        "agent": args.agent,
        "split": split,
        "env_kwargs": kwargs,
        "episodes": int(totals["episodes"]),
        "steps": int(totals["steps"]),
        "steps_per_s": round(totals["steps"] / wall, 1),
        "env_steps_per_s": round(totals["steps"] / max(totals["env_time"], 1e-9), 1),
        "success": round(totals["won"] / n, 4),
        "mean_return": round(totals["return"] / n, 4),
        "mean_score": round(totals["score"] / n, 4),
        "invalid_rate": round(totals["invalid"] / max(totals["steps"], 1), 4),
        "per_task_type": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_type.items())},
        "env_errors": int(totals["errors"]),
        "panel_hash": panel_hash,
    }
    print(json.dumps(result))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
