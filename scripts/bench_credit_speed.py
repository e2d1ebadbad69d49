"""Time credit modules and graph construction on synthetic batches.

    python scripts/bench_credit_speed.py --groups 16 --group-size 8 --steps 50

Trajectories walk over a small state space so anchor groups form as in ALFWorld. Prints one JSON
line: median milliseconds per call for every module (returns + all advantage levels), and graph
build time at two sizes (their ratio shows the build is linear in the number of steps).
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import numpy as np

from creditgym import credit
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup


def synthetic_batch(groups: int, size: int, steps: int, states: int = 40, seed: int = 0):
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
                Trajectory(
                    steps=[
                        Step(
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
        out.append(TrajectoryGroup(trajectories=trajs))
    return out


def fill_model_fields(traj: Trajectory, rng: np.random.Generator) -> None:
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


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--methods", default=",".join(credit.available()))
    args = p.parse_args()
    batch = synthetic_batch(args.groups, args.group_size, args.steps)
    result: dict = {
        "batch": f"{args.groups}x{args.group_size}x{args.steps}",
        "steps": args.groups * args.group_size * args.steps,
    }
    for name in args.methods.split(","):
        module = credit.make(name)
        module(batch)  # warm-up
        result[f"{name}_ms"] = round(median_ms(lambda m=module: m(batch), args.repeats), 3)

    def build(steps: int) -> float:
        """Median ms to build one group's graph (G trajectories of `steps` steps), GC paused
        during timing as `timeit` does, so the figure is the algorithm's and not the collector's."""
        (group,) = synthetic_batch(1, args.group_size, steps, states=4 * steps, seed=1)

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
