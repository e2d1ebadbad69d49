"""What restoring an env state costs, per env: replay (reset + t steps) and native snapshots.

    python scripts/bench_branching.py                 # every env below, markdown table
    python scripts/bench_branching.py --only KeyRooms ALFWorld --depth 10 --repeats 20

For each env: play one seeded episode of up to --depth steps (the expert's actions for the first
quarter when the env has an expert, then random admissible actions), snapshot the last state
before the episode ends (depth t = its step), and time `restore` of that snapshot --repeats
times, by replay and, where the env instance has them, natively. Also reported: one reset (timed
after the restores, so one-off costs such as game generation or a JVM start are excluded), one
step (over the episode) and the pickled size of a snapshot. Every restore is checked to give the recorded
observation (`restore` itself checks the state keys). Medians; seconds as milliseconds.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import statistics
import sys
import time
from typing import Any

from creditgym import envs
from creditgym.envs.branching import branching_of

#: (label, env id, kwargs) benchmarked by default.
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("KeyRooms medium", "creditgym/KeyRooms-v0", {"level": "medium"}),
    ("KeyRooms hard", "creditgym/KeyRooms-v0", {"level": "hard"}),
    ("ALFWorld fast", "creditgym/ALFWorld-v0", {"panel_size": 4}),
    ("ALFWorld engine", "creditgym/ALFWorld-v0", {"panel_size": 4, "backend": "textworld"}),
    ("TextWorld", "creditgym/TextWorld-v0", {"kinds": ["treasure_hunter"], "panel_size": 1}),
    ("TWX cookingworld", "creditgym/TWX-cookingworld-v0", {"panel_size": 2}),
    ("TWX coin", "creditgym/TWX-coin-v0", {"panel_size": 2}),
    ("WebShop text", "creditgym/WebShop-v0", {}),
    ("WebShop browser", "creditgym/WebShop-v0", {"mode": "browser"}),
    ("Search (BM25 in-process)", "creditgym/Search-v0", {}),
    ("ToolUse", "creditgym/ToolUse-v0", {}),
]


def _ms(xs: list[float]) -> float:
    return 1000.0 * statistics.median(xs)


def measure(env_id: str, kwargs: dict[str, Any], depth: int, repeats: int, seed: int) -> dict:
    """Restore costs of one env (see the module docstring)."""
    if branching_of(env_id) == "none":
        return {"branching": "none"}
    env = envs.make(env_id, **kwargs)
    try:
        rng = random.Random(seed)
        obs, info = env.reset(seed=seed, options={"task_id": 0})
        snap, snap_obs = env.snapshot(), obs
        steps = []
        for i in range(depth):
            action = env.expert_action() if type(env).has_expert() and i < depth // 4 else None
            if action is None:
                acts = info.get("admissible_actions") or ["look"]
                action = rng.choice(list(acts))
            t0 = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(action)
            steps.append(time.perf_counter() - t0)
            if terminated or truncated:
                break
            snap, snap_obs = env.snapshot(), obs
        out: dict[str, Any] = {
            "branching": "snapshot" if snap.payload is not None else "replay",
            "depth": snap.step,
            "step_ms": _ms(steps) if steps else 0.0,
        }
        variants = [("replay", snap.without_payload())]
        if snap.payload is not None:
            variants.append(("native", snap))
        for label, s in variants:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                got, _ = env.restore(s)
                times.append(time.perf_counter() - t0)
                if got != snap_obs:
                    raise AssertionError(f"{env_id}: {label} restore gave another observation")
            out[f"{label}_ms"] = _ms(times)
            out[f"{label}_bytes"] = len(pickle.dumps(s))
        resets = []
        for _ in range(max(3, repeats // 2)):
            t0 = time.perf_counter()
            env.reset(seed=seed, options={"task_id": 0})
            resets.append(time.perf_counter() - t0)
        out["reset_ms"] = _ms(resets)
        return out
    finally:
        env.close()


def table(rows: list[tuple[str, dict]]) -> str:
    """The results as a markdown table."""
    lines = [
        "| env | restore | depth t | reset ms | step ms | restore by replay ms | "
        "native restore ms | snapshot bytes (native) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        if r.get("branching") == "none":
            lines.append(f"| {label} | none | | | | | | |")
            continue
        native = f"{r['native_ms']:.3f}" if "native_ms" in r else "-"
        size = f"{r['replay_bytes']}" + (f" ({r['native_bytes']})" if "native_bytes" in r else "")
        lines.append(
            f"| {label} | {r['branching']} | {r['depth']} | {r['reset_ms']:.2f} | "
            f"{r['step_ms']:.3f} | {r['replay_ms']:.2f} | {native} | {size} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[tuple[str, dict]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="*", default=None, help="labels containing any of these words")
    p.add_argument("--depth", type=int, default=10, help="steps played before the snapshot")
    p.add_argument("--repeats", type=int, default=10, help="restores timed per variant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print one JSON line per env")
    args = p.parse_args(argv)
    if args.depth < 1 or args.repeats < 1:
        p.error("--depth and --repeats must be >= 1")
    cases = CASES
    if args.only:
        cases = [c for c in CASES if any(w.lower() in c[0].lower() for w in args.only)]
        if not cases:
            p.error(f"no env label matches {args.only}; labels: {[c[0] for c in CASES]}")
    rows = []
    for label, env_id, kwargs in cases:
        result = measure(env_id, kwargs, args.depth, args.repeats, args.seed)
        rows.append((label, result))
        if args.json:
            print(json.dumps({"env": label, "env_id": env_id, **result}), flush=True)
        print(f"measured {label}", file=sys.stderr, flush=True)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
