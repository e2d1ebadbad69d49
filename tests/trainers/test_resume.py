"""A run killed with SIGKILL mid-iteration resumes to exactly the parameters of an unkilled run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from creditgym.trainers.checkpoint import latest_checkpoint, load_checkpoint
from creditgym.trainers.logger import read_metrics

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
name: resume
seed: 3
model: {name: tiny}
env: {id: "tests.trainers.slow_keyrooms:test/SlowKeyRooms-v0", kwargs: {level: small, max_steps: 2}}
agent: {max_new_tokens: 4, max_prompt_tokens: 512}
rollout: {tasks_per_iteration: 2, group_size: 2}
credit: {name: gigpo}
learner: {lr: 1.0e-3, micro_batch_tokens: 2048}
eval: {tasks: 1, every: 2}
train: {iterations: 3, checkpoint_every: 1, keep_checkpoints: 3}
logging: {tensorboard: false, plot: false, progress: false}
"""


def _train(*args: str) -> subprocess.Popen:
    # Nothing may depend on str hashing; the repo root on the path makes `tests.` importable.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONHASHSEED="random", PYTHONPATH=path)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def _tensors(state: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside a nested state dict, by path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        out[prefix] = state
    elif isinstance(state, dict):
        for k, v in state.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out


#: Plug-ins on (issue 19): tracker + its prioritised sampler + the EPO loss term with its entropy
#: history; a replay buffer + the DUMP curriculum. Their states must resume exactly too.
PLUGINS = {
    "plain": [],
    "tracker_epo": [
        "credit.name=sspo",
        "tracker.name=sspo_value",
        "sampler.name=sspo_priority",
        "loss.terms=[kl,entropy,epo]",
        "loss.term_options={epo: {coef: 0.01}}",
    ],
    "buffer_dump": ["credit.name=grpo", "buffer.name=arpo_replay", "sampler.name=dump"],
}


@pytest.mark.slow
@pytest.mark.parametrize("plugins", list(PLUGINS))
def test_sigkill_mid_iteration_then_resume_matches_an_uninterrupted_run(
    tmp_path: Path, plugins: str
) -> None:
    config = tmp_path / "resume.yaml"
    config.write_text(CONFIG)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    extra = PLUGINS[plugins]

    _finish(_train("--config", str(config), f"run_dir={straight}", *extra))

    proc = _train("--config", str(config), f"run_dir={killed}", *extra)
    ckpts = killed / "checkpoints"
    deadline = time.monotonic() + 600
    while (latest_checkpoint(ckpts) is None) and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never wrote its first checkpoint"
        time.sleep(0.02)
    # Iteration 2's rollout alone sleeps >= 8 x 0.25 s in env steps (2 tasks x 2 episodes x 2
    # steps, SlowKeyRooms): 0.5 s after checkpoint 1 appears is inside it on any machine.
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert latest_checkpoint(ckpts).name == "iter_000001", "killed after iteration 2 finished"

    out = _finish(_train("--resume", str(killed)))
    assert "resumed" in out and "from iteration 1" in out

    a = load_checkpoint(straight / "checkpoints" / "iter_000003")
    b = load_checkpoint(killed / "checkpoints" / "iter_000003")
    ta, tb = _tensors(a.learner), _tensors(b.learner)
    assert ta.keys() == tb.keys() and len(ta) > 10
    for name in ta:
        assert torch.equal(ta[name], tb[name]), f"{name} differs after resume"
    assert a.learner["updates"] == b.learner["updates"] == 3
    assert a.loop["sampler"] == b.loop["sampler"]
    pa, pb = a.loop.get("plugins", {}), b.loop.get("plugins", {})
    assert repr(pa) == repr(pb)  # tracker values, buffer contents, EPO entropy history
    if plugins == "tracker_epo":
        assert len(pa["terms"]["epo"]["history"]) == 3 and len(pa["tracker"]["stats"]) > 0
    if plugins == "buffer_dump":
        assert "buffer" in pa and sum(a.loop["sampler"]["counts"].values()) == 3 * 2 * 2

    # Same tasks, same samples, same advantages in the resumed iterations; one metrics record each.
    for k in (2, 3):
        rows_a = (straight / "trajectories" / f"iter_{k:06d}.jsonl").read_text()
        rows_b = (killed / "trajectories" / f"iter_{k:06d}.jsonl").read_text()
        assert rows_a == rows_b
    recs_a, recs_b = (
        read_metrics(straight / "metrics.jsonl"),
        read_metrics(killed / "metrics.jsonl"),
    )
    assert [r["iteration"] for r in recs_b] == [0, 1, 2, 3]
    for ra, rb in zip(recs_a, recs_b):
        same = [
            k
            for k in ra
            if k.startswith(("rollout/", "credit/", "train/", "eval/success"))
            and not k.endswith(("_s", "_ms"))
        ]
        assert {k: ra[k] for k in same} == {k: rb.get(k) for k in same}
    meta = json.loads((killed / "meta.json").read_text())
    assert meta["resumes"][0]["from_iteration"] == 1
