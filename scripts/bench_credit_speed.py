"""Time credit modules and graph construction on synthetic batches, optionally against an older
copy of ``credit/`` in the same process.

    python scripts/bench_credit_speed.py --groups 16 --group-size 8 --steps 50
    git archive <commit> credit | tar -x -C /tmp/old    # then:
    python scripts/bench_credit_speed.py --before /tmp/old/credit --search-obs

Trajectories walk over a small state space so anchor groups form as in ALFWorld. Prints one JSON
line: median milliseconds per call for every module, and graph build time at two sizes (their
ratio shows the build is linear in the number of steps). Modules that read the group's
`TrajectoryGraph` are timed twice: ``_ms`` with the graph already built (it is built once per
batch and shared by every module) and ``_cold_ms`` with it rebuilt inside every call.

``--before DIR`` imports DIR (an older ``credit/`` folder) as a separate package and times its
modules on an identical batch built from its own classes (keys ``before_<name>_ms``).
``--search-obs`` fills every step's observation with a text from real ``creditgym/Search-v0``
rollouts (a seeded mix of the env's expert queries and random ones, per group one task; a
synthetic state id maps to one of its group's observed texts, so revisits repeat a text) and
times GiGPO with ``similarity=0.9``; it also times the clustering alone, verl-agent's plain loop
(``SequenceMatcher(None, obs, rep).ratio()`` against each representative) against ours, and
checks that both give the same clusters.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from creditgym import credit

GRAPH_READERS = ("gigpo", "hgpo", "salt")


def synthetic_batch(pkg: ModuleType, groups: int, size: int, steps: int, states: int = 40, seed=0):
    """The batch, built from ``pkg``'s own Step/Trajectory/TrajectoryGroup (same numbers for
    any package)."""
    traj_mod = importlib.import_module(f"{pkg.__name__}.trajectory")
    rng = np.random.default_rng(seed)
    out = []
    for gi in range(groups):
        trajs = []
        for _ in range(size):
            keys = rng.integers(states, size=steps + 1)
            rewards = np.zeros(steps)
            rewards[-1] = 10.0 * (rng.random() < 0.5)
            valid = rng.random(steps) > 0.1
            trajs.append(
                traj_mod.Trajectory(
                    steps=[
                        traj_mod.Step(
                            state_key=f"g{gi}-s{keys[t]}",
                            action=f"a{rng.integers(5)}",
                            reward=float(rewards[t]),
                            valid=bool(valid[t]),
                            next_state_key=f"g{gi}-s{keys[t + 1]}",
                        )
                        for t in range(steps)
                    ]
                )
            )
            fill_model_fields(trajs[-1], rng)
        out.append(traj_mod.TrajectoryGroup(trajectories=trajs))
    return out


def fill_model_fields(traj, rng: np.random.Generator) -> None:
    """What the trainer fills for modules that need model outputs (values, token entropies,
    answer log-probs) and what a HiPER policy emits (switch, subgoal), so every module is timed."""
    for t, step in enumerate(traj.steps):
        step.values = {h: float(rng.normal()) for h in ("v", "high", "low", "term")}
        step.entropies = rng.random(32)
        step.answer_logprob_before, step.answer_logprob_after = (-3 * rng.random(2)).tolist()
        switch = "SWITCH" if t == 0 or rng.random() < 0.3 else "KEEP"
        step.extras = {"switch": switch, "subgoal": f"subgoal {rng.integers(4)}"}
        step.info = {"ground_truth": "the answer"}
    traj.steps[-1].action = "<answer>an answer</answer>"


def search_observations(groups: int, size: int, seed: int = 0) -> list[list[str]]:
    """Per group (one Search-v0 task), the distinct observation texts of ``size`` rollouts."""
    import gymnasium as gym

    import creditgym.envs  # noqa: F401  (registration)

    env = gym.make("creditgym/Search-v0", split="train")
    rng = np.random.default_rng(seed)
    pools = []
    for gi in range(groups):
        seen: dict[str, None] = {}
        for _ in range(size):
            obs, info = env.reset(seed=gi, options={"task_id": gi})
            seen.setdefault(obs)
            words = info["task"].split()
            done = False
            while not done:
                if rng.random() < 0.5:
                    action = env.unwrapped.expert_action()
                else:
                    k = int(rng.integers(1, 4))
                    action = f"<search>{' '.join(rng.choice(words, k))}</search>"
                obs, _, term, trunc, _ = env.step(action)
                seen.setdefault(obs)
                done = term or trunc
        pools.append(list(seen))
    env.close()
    return pools


def use_observations(batch, pools: list[list[str]]) -> None:
    """Step observation = its group's pool text for its (synthetic) state id."""
    for g, pool in zip(batch, pools):
        for t in g.trajectories:
            for s in t.steps:
                s.observation = pool[int(s.state_key.rsplit("s", 1)[1]) % len(pool)]


def load_before(path: str) -> ModuleType:
    """Import an older ``credit/`` folder as the package ``credit_before``."""
    tmp = Path(tempfile.mkdtemp(prefix="credit_before_"))
    dest = tmp / "credit_before"
    shutil.copytree(path, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for f in dest.glob("*.py"):
        f.write_text(re.sub(r"creditgym\.credit\b", "credit_before", f.read_text()))
    sys.path.insert(0, str(tmp))
    return importlib.import_module("credit_before")


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


def time_modules(pkg, batch, methods, repeats, prefix, result, cold: bool) -> None:
    for name in methods:
        module = pkg.make(name)
        module(batch)  # warm-up (and the graph, built once)
        result[f"{prefix}{name}_ms"] = round(median_ms(lambda m=module: m(batch), repeats), 3)
        if cold and name in GRAPH_READERS:

            def rebuilt(m=module):
                for g in batch:
                    g._graph = None
                m(batch)

            result[f"{prefix}{name}_cold_ms"] = round(median_ms(rebuilt, repeats), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--methods", default=",".join(credit.available()))
    p.add_argument("--before", default=None, help="an older credit/ folder to time alongside")
    p.add_argument("--search-obs", action="store_true", help="GiGPO similarity=0.9 on Search-v0")
    args = p.parse_args()
    methods = args.methods.split(",")
    result: dict = {
        "batch": f"{args.groups}x{args.group_size}x{args.steps}",
        "steps": args.groups * args.group_size * args.steps,
    }
    shape = (args.groups, args.group_size, args.steps)
    before = load_before(args.before) if args.before else None
    pools = search_observations(args.groups, args.group_size) if args.search_obs else None
    # Interleave the two sides, module by module, so machine load hits both alike.
    pkgs = [("", credit)] + ([("before_", before)] if before else [])
    batches = {prefix: synthetic_batch(pkg, *shape) for prefix, pkg in pkgs}
    for name in methods:
        for prefix, pkg in pkgs:
            time_modules(pkg, batches[prefix], [name], args.repeats, prefix, result, not prefix)
    if pools is not None:
        for prefix, pkg in pkgs:
            batch = synthetic_batch(pkg, *shape)
            use_observations(batch, pools)
            module = pkg.make("gigpo", similarity=0.9)
            module(batch)
            result[f"{prefix}gigpo_sim0.9_search_ms"] = round(
                median_ms(lambda m=module, b=batch: m(b), max(3, args.repeats // 10)), 3
            )
        from creditgym.credit.gigpo import reference_similarity_clusters, similarity_clusters

        texts = [[s.observation for t in g.trajectories for s in t.steps] for g in batch]
        t0 = time.perf_counter()
        ref = [reference_similarity_clusters(x, 0.9) for x in texts]
        result["similarity_reference_loop_ms"] = round(1000 * (time.perf_counter() - t0), 3)
        t0 = time.perf_counter()
        ours = [similarity_clusters(x, 0.9).tolist() for x in texts]
        result["similarity_ours_ms"] = round(1000 * (time.perf_counter() - t0), 3)
        result["similarity_same_clusters"] = ours == ref
        result["search_obs_chars_mean"] = round(float(np.mean([len(x) for x in sum(pools, [])])))
        result["search_clusters_per_group"] = float(np.mean([max(r) + 1 for r in ref]))

    def build(steps: int) -> float:
        """Median ms to build one group's graph (G trajectories of `steps` steps), GC paused
        during timing as `timeit` does, so the figure is the algorithm's and not the collector's."""
        (group,) = synthetic_batch(credit, 1, args.group_size, steps, states=4 * steps, seed=1)

        def once():
            group._graph = None
            group.graph()

        gc.disable()
        try:
            return median_ms(once, 5)
        finally:
            gc.enable()

    small, large = build(args.steps), build(args.steps * 10)
    result["graph_build_ms"] = round(small, 3)
    result["graph_build_ms_10x_steps"] = round(large, 3)
    result["graph_build_ratio_10x"] = round(large / small, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
