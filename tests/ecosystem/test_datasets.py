"""scripts/export_trajectories.py: a real trajectory dump, exported and loaded with `datasets`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from creditgym import envs
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers.dump import trajectory_rows

datasets = pytest.importorskip("datasets")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "export_trajectories.py"


def _group(env, task: int, seeds: range) -> TrajectoryGroup:
    """A group of KeyRooms episodes (expert or seeded random actions), recorded as the rollout does."""
    group = TrajectoryGroup(task_id=str(task), seed=seeds[0], env_id="creditgym/KeyRooms-v0")
    for seed in seeds:
        rng = np.random.default_rng(seed)
        obs, info = env.reset(seed=seed, options={"task_id": task})
        traj = Trajectory(task_id=info["task_id"], seed=seed, task_type=info["task_type"])
        done = False
        while not done:
            if seed % 2:
                action = str(rng.choice(info["admissible_actions"]))
            else:
                action = env.expert_action()
            key, admissible = info["state_key"], info["admissible_actions"]
            nxt, reward, term, trunc, info = env.step(action)
            step = Step(key, action, reward, info["action_valid"], info["state_key"], obs)
            step.admissible_actions, step.terminated, step.truncated = admissible, term, trunc
            step.info = {k: v for k, v in info.items() if k != "admissible_actions"}
            traj.steps.append(step)
            obs, done = nxt, term or trunc
        traj.won = bool(info["won"])
        group.trajectories.append(traj)
    return group


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    (run / "trajectories").mkdir()
    env = envs.make("creditgym/KeyRooms-v0", level="small", split="valid", max_steps=12)
    for iteration in range(2):
        groups = [_group(env, t, range(4)) for t in (iteration, iteration + 5)]
        n = sum(len(t.steps) for g in groups for t in g.trajectories)
        rows = trajectory_rows(iteration, groups, np.linspace(-1, 1, n))
        with (run / "trajectories" / f"iter_{iteration:04d}.jsonl").open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    env.close()
    return run


@pytest.mark.parametrize("fmt,loader", [("parquet", "parquet"), ("jsonl", "json")])
def test_export_loads_with_datasets(run_dir, tmp_path, fmt, loader):
    out = tmp_path / "dataset"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), "--format", fmt, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [
        json.loads(line)
        for f in sorted((run_dir / "trajectories").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    data = datasets.load_dataset(
        loader, data_files=sorted(str(p) for p in out.glob(f"*.{fmt}")), split="train"
    )
    assert data.num_rows == len(rows) and data.num_rows > 40
    assert data.features["reward"].dtype == "float64"
    assert data.features["admissible_actions"].feature.dtype == "string"
    for got, want in zip(data, rows):
        for name in ("iteration", "group", "trajectory", "step", "state_key", "action", "reward"):
            assert got[name] == want[name], name
        assert got["advantage"] == pytest.approx(want["advantage"])
        assert got["admissible_actions"] == want["admissible_actions"]
        assert json.loads(got["info"]) == want["info"]  # object fields travel as JSON text
    assert "`info`" in (out / "README.md").read_text()


def test_export_refuses_a_folder_without_a_dump(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no trajectory dump" in done.stderr
