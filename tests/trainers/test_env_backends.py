"""The ``process`` env backend and what every backend shares: equal trajectories, graphs and
advantages on every backend, faults that end episodes and never training, no stray processes.

The Ray backend's tests (one cluster for all of them) are in ``test_env_backends_ray.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from creditgym import credit
from creditgym.agents.tabular import TabularSoftmaxAgent
from creditgym.credit.graph import TrajectoryGraph
from creditgym.trainers.rollout import EnvPool, collect
from creditgym.trainers.shard_remote import ShardRebuildError
from tests.trainers.faulty_envs import FAULTY
from tests.trainers.test_rollout import Scripted

SMALL = {"level": "small"}
#: The rollout tests' Walk env, made so that a worker imports the module registering it.
WALK = "tests.trainers.test_rollout:test/Walk-v0"
ROOT = Path(__file__).resolve().parents[2]


def fingerprint(batches) -> str:
    """A hash of the trajectories, graphs and GiGPO advantages of some rollout batches."""
    out = []
    module = credit.make("gigpo")
    for batch in batches:
        groups = [g for g in batch.groups if g.trajectories]
        adv = module(groups)
        for g in groups:
            steps = [
                [s.state_key, s.action, s.reward, s.valid, s.next_state_key, s.observation,
                 s.admissible_actions, s.terminated, s.truncated,
                 sorted((k, repr(v)) for k, v in s.info.items())]
                for t in g.trajectories
                for s in t.steps
            ]  # fmt: skip
            graph = TrajectoryGraph.from_group(g).to_dict()
            out.append([g.task_id, g.seed, [t.won for t in g.trajectories], steps, graph])
        out.append([np.asarray(a).round(12).tolist() for a in adv.values])
        stats = {k: v for k, v in batch.stats.items() if not k.startswith("time_")}
        out.append(sorted(stats.items()))
    return hashlib.sha256(json.dumps(out, default=repr).encode()).hexdigest()


def play(backend: str, **options) -> str:
    """Two iterations with the (learning-free, seeded) tabular agent and one scripted, on
    KeyRooms small, in shards of 3 (so groups of 4 straddle shards)."""
    with EnvPool(
        "creditgym/KeyRooms-v0", 8, env_kwargs=SMALL, backend=backend, envs_per_shard=3, **options
    ) as pool:
        agent = TabularSoftmaxAgent(seed=3)
        batches = [collect(pool, agent, [k, k + 5], 4, [10 + k, 20 + k]) for k in range(2)]
        walk = EnvPool(WALK, 4, backend=backend, envs_per_shard=3, **options)
        with walk:
            batches.append(collect(walk, Scripted({(1, 0): "stay"}), [1, 3], 2, [0, 1]))
    return fingerprint(batches)


#: Computed once per session: the in-process reference the other backends must match.
_REFERENCE: dict[str, str] = {}


def reference() -> str:
    if "inprocess" not in _REFERENCE:
        _REFERENCE["inprocess"] = play("inprocess")
    return _REFERENCE["inprocess"]


def tagged_processes(tag: str) -> list[int]:
    """Pids of live processes whose environment holds ``CREDITGYM_TEST_TAG=tag``."""
    pids = []
    needle = f"CREDITGYM_TEST_TAG={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def wait_gone(tag: str, within_s: float = 20.0) -> list[int]:
    """Poll until no tagged process is left (or the deadline); return what is left."""
    deadline = time.monotonic() + within_s
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# ---------------------------------------------------------------------------------- fast
def test_bad_options_are_refused_with_the_known_ones():
    with pytest.raises(TypeError, match=r"unknown options \['step_timeout'\].*step_timeout_s"):
        EnvPool("test/Walk-v0", 1, step_timeout=3)
    with pytest.raises(ValueError, match="step_timeout_s must be > 0"):
        EnvPool("test/Walk-v0", 1, backend="process", step_timeout_s=0)
    with pytest.raises(ValueError, match="max_failed_rebuilds must be >= 1"):
        EnvPool("test/Walk-v0", 1, backend="process", max_failed_rebuilds=0)


def test_inprocess_submit_calls_and_counters():
    with EnvPool("test/Walk-v0", 3, envs_per_shard=2) as pool:
        assert pool.submit_reset(2, 1, 0).result().obs == "pos 0"
        assert pool.submit_step(2, "step").result().obs == "pos 1"
        with pytest.raises(NotImplementedError, match="Walk has no expert"):
            pool.submit_expert(2).result()
        res = pool.submit_step(2, "crash").result()
        assert "engine died" in res.error and pool.take_counters()["env_restarts"] == 1
        assert set(pool.take_counters().values()) == {0}


# ---------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_process_backend_gives_the_inprocess_trajectories_graphs_and_advantages():
    assert play("process") == reference()


@pytest.mark.slow
def test_a_crashed_worker_ends_its_episodes_and_is_rebuilt():
    """Episode 0 kills its worker (shard 0 holds episodes 0 and 1): both end with an error, so
    group 0 has one member left and is dropped whole; group 1 is untouched. The next rollout
    runs on a rebuilt worker."""
    with EnvPool(FAULTY, 6, backend="process", envs_per_shard=2) as pool:
        pid = pool.health()["shards"][0]["pid"]
        batch = collect(pool, Scripted({(0, 1): "die"}), [2, 2], 3, [0, 1])
        assert [len(g.trajectories) for g in batch.groups] == [0, 3]
        assert batch.stats["env_errors"] == 2 and batch.stats["dropped_groups"] == 1
        errors = sorted(t.error for t in batch.dropped if t.error)
        assert len(errors) == 2 and all("exited (code 3)" in e for e in errors)
        again = collect(pool, Scripted(), [2, 2], 3, [0, 1])
        assert again.stats["dropped"] == 0 and again.stats["success"] == 1.0
        counts = pool.take_counters()
        assert counts["shard_lost_episodes"] == 2 and counts["shard_restarts"] == 1
        assert pool.health()["shards"][0]["pid"] != pid


@pytest.mark.slow
def test_a_hung_step_times_out_kills_its_shard_and_the_rollout_goes_on():
    with EnvPool(FAULTY, 4, backend="process", envs_per_shard=2, step_timeout_s=1.0) as pool:
        batch = collect(pool, Scripted({(3, 0): "hang"}), [1, 1], 2, [0, 1])
        assert [len(g.trajectories) for g in batch.groups] == [2, 0]
        errors = sorted(t.error for t in batch.dropped if t.error)  # slots 2 and 3 (shard 1)
        assert len(errors) == 2 and all("step_timeout_s=1;" in e for e in errors)
        assert "step_many of slot 1 took longer" in errors[0]  # slot 1 of shard 1 hung
        counts = pool.take_counters()
        assert counts["shard_timeouts"] == 1 and counts["shard_lost_episodes"] == 2
        assert collect(pool, Scripted(), [1, 1], 2, [0, 1]).stats["dropped"] == 0


@pytest.mark.slow
def test_shards_are_recycled_by_rss_and_by_episode_count():
    with EnvPool(FAULTY, 2, backend="process", envs_per_shard=1, recycle_rss_mb=150) as pool:
        collect(pool, Scripted({(0, 0): "leak"}), [0], 2, [0])
        assert pool.health()["shards"][0]["rss_mb"] > 150 > pool.health()["shards"][1]["rss_mb"]
        assert collect(pool, Scripted(), [0], 2, [0]).stats["dropped"] == 0
        assert pool.take_counters()["shard_recycles"] == 1  # only the leaking shard
        assert pool.health()["shards"][0]["rss_mb"] < 150
    with EnvPool(FAULTY, 2, backend="process", envs_per_shard=2, recycle_episodes=2) as pool:
        for _ in range(3):
            assert collect(pool, Scripted(), [0], 2, [0]).stats["dropped"] == 0
        assert pool.take_counters()["shard_recycles"] == 2


@pytest.mark.slow
def test_failing_rebuilds_stop_the_run_with_a_clear_error(tmp_path):
    marker = tmp_path / "broken"
    kwargs = {"fail_if_exists": str(marker)}
    with EnvPool(
        FAULTY, 2, env_kwargs=kwargs, backend="process", envs_per_shard=2, max_failed_rebuilds=2
    ) as pool:
        marker.touch()  # from now on the env cannot be built
        batch = collect(pool, Scripted({(0, 0): "die"}), [0], 2, [0])
        assert batch.stats["env_errors"] == 2
        with pytest.raises(ShardRebuildError, match=r"failed to rebuild 2 times in a row.*exists"):
            collect(pool, Scripted(), [0], 2, [0])
        assert pool.take_counters()["shard_rebuild_failures"] == 2


@pytest.mark.slow
def test_no_worker_outlives_a_normal_close(monkeypatch):
    tag = uuid.uuid4().hex
    monkeypatch.setenv("CREDITGYM_TEST_TAG", tag)
    assert tagged_processes(tag) == []
    with EnvPool(FAULTY, 4, backend="process", envs_per_shard=2, step_timeout_s=5) as pool:
        collect(pool, Scripted(), [0, 1], 2, [0, 1])
        assert len(tagged_processes(tag)) == 2
    assert wait_gone(tag) == []


_KILLED_RUN = textwrap.dedent(
    """
    import sys
    from creditgym.trainers.rollout import EnvPool, collect
    from tests.trainers.faulty_envs import FAULTY
    from tests.trainers.test_rollout import Scripted

    class Announce(Scripted):
        def act(self, contexts):
            print("rolling", flush=True)
            return [type(t)(action="slow") for t in super().act(contexts)]

    if __name__ == "__main__":
        pool = EnvPool(FAULTY, 4, backend="process", envs_per_shard=2)
        while True:
            collect(pool, Announce(), [4, 4], 2, [0, 1])
    """
)


@pytest.mark.slow
def test_no_worker_outlives_a_trainer_killed_mid_rollout(tmp_path):
    tag = uuid.uuid4().hex
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    env = {**os.environ, "CREDITGYM_TEST_TAG": tag, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "rolling"  # steps are now in flight
        workers = [p for p in tagged_processes(tag) if p != proc.pid]
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_gone(tag) == []


@pytest.mark.slow
def test_snapshots_cross_the_process_boundary():
    """`snapshot_many` / `restore_many` on a worker give what they give in-process."""
    got = {}
    for backend in ("inprocess", "process"):
        with EnvPool("creditgym/KeyRooms-v0", 4, env_kwargs=SMALL, backend=backend,
                     envs_per_shard=2) as pool:  # fmt: skip
            pool.reset_many([(0, 1, 7)])
            first = pool.step_many([(0, "look")])[0]
            (snap,) = pool.snapshot_many([0])
            restored = pool.restore_many([(3, snap)])  # another shard
            after = pool.step_many([(3, "inventory"), (0, "inventory")])
            got[backend] = (first.obs, restored[0].obs, restored[0].error, [r.obs for r in after])
    assert got["process"] == got["inprocess"] and got["process"][2] is None
    assert got["process"][3][0] == got["process"][3][1]
