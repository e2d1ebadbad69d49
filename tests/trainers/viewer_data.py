"""Recorded KeyRooms groups for the viewer tests: seeded play, exact A^pi, a benchmark folder."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np

from creditgym import credit, envs  # noqa: F401  (registers the envs)
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers.viewer.bench import write_benchmark_dump

ENV_ID = "creditgym/KeyRooms-v0"
GAMMA = 0.95


def play_groups(
    n_groups: int = 2,
    group_size: int = 4,
    level: str = "small",
    max_steps: int = 12,
    p_expert: float = 0.6,
    seed: int = 0,
) -> tuple[list[TrajectoryGroup], np.ndarray]:
    """Groups of KeyRooms episodes under a seeded expert/uniform mixture policy, and the exact
    A^pi(s, a) of that policy for every step (it is a stationary policy: with probability
    p_expert one of the expert's shortest-path actions, else a uniform admissible action)."""
    env = gymnasium.make(ENV_ID, split="train", level=level, max_steps=max_steps).unwrapped
    rng = np.random.default_rng(seed)
    groups, refs = [], []
    for g in range(n_groups):
        group = TrajectoryGroup(task_id="", seed=g, env_id=ENV_ID)
        model = None
        for _ in range(group_size):
            obs, info = env.reset(seed=g, options={"task_id": g})
            if model is None:
                model = env.model()
                policy = _policy(model, p_expert)
                exact = model.evaluate(policy, gamma=GAMMA)
                group.task_id = info["task_id"]
            traj = Trajectory(task_id=info["task_id"], seed=g, task_type=info["task_type"])
            done = False
            while not done:
                s = model.index[info["state_key"]]
                acts = model.actions[s]
                a = int(rng.choice(len(acts), p=policy[s]))
                key = info["state_key"]
                obs2, r, term, trunc, info = env.step(acts[a])
                traj.steps.append(
                    Step(
                        state_key=key,
                        action=acts[a],
                        reward=float(r),
                        valid=info["action_valid"],
                        next_state_key=info["state_key"],
                        observation=obs,
                        terminated=term,
                        truncated=trunc,
                    )
                )
                refs.append(float(exact.A[s][a]))
                obs, done = obs2, term or trunc
            traj.won = bool(info["won"])
            group.trajectories.append(traj)
        groups.append(group)
    env.close()
    return groups, np.array(refs)


def _policy(model, p_expert: float) -> list[np.ndarray]:
    out = []
    for s, acts in enumerate(model.actions):
        if not acts:
            out.append(np.zeros(0))
            continue
        p = np.full(len(acts), (1 - p_expert) / len(acts))
        best = model.shortest_path_actions(s)
        for a in best:
            p[acts.index(a)] += p_expert / len(best)
        if not best:
            p = np.full(len(acts), 1.0 / len(acts))
        out.append(p / p.sum())
    return out


def benchmark_folder(out: Path, groups, reference, method: str = "gigpo", iterations=(0,)) -> Path:
    """A benchmark_credit.py-shaped folder: summary.json and the dumps of ``method`` seed 0."""
    module = credit.make(method)
    adv = module(groups)
    rms = float(np.sqrt(np.mean(adv.values**2)))
    adv = credit.Advantages(values=adv.values / (rms + 1e-8), spans=adv.spans)
    for k in iterations:
        write_benchmark_dump(out, method, 0, k, groups, adv, reference, "exact A^π (γ = 0.95)")
    config = {
        "env": ENV_ID,
        "env_kwargs": {"level": "small"},
        "methods": [method],
        "method_options": {},
        "adv_scale": "rms",
    }
    (out / "summary.json").write_text(json.dumps({"config": config}))
    return out
