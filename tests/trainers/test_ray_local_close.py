"""The ``ray`` env backend without ``ray.address``: the pool starts a local cluster, and after a
normal close neither that cluster nor any process it started is left.

The stray seen after a loaded benchmark run (a Ray ``default_worker`` whose parent was pid 1)
was not reproduced here: SIGKILLed actors and a close during their restart left nothing. The
first test makes a real stray instead (a daemon started on a worker of the cluster, which Ray
leaves running) and checks that the pool's close finds and kills it.

Processes are listed by an environment tag (`tagged_processes`, as the process backend's test):
every process the run starts, Ray's included, inherits it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
import warnings

import pytest

ray = pytest.importorskip("ray")

from creditgym.trainers import shard_ray  # noqa: E402
from creditgym.trainers.rollout import EnvPool, collect  # noqa: E402
from tests.trainers.faulty_envs import FAULTY  # noqa: E402
from tests.trainers.test_env_backends import tagged_processes, wait_gone  # noqa: E402
from tests.trainers.test_rollout import Scripted  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def tag(monkeypatch):
    if ray.is_initialized():
        pytest.skip("a Ray session is already open in this process")
    value = uuid.uuid4().hex
    monkeypatch.setenv("CREDITGYM_TEST_TAG", value)
    assert tagged_processes(value) == []
    yield value
    if ray.is_initialized():
        ray.shutdown()
    for pid in wait_gone(value, within_s=1):  # never leave a failed test's processes behind
        os.kill(pid, signal.SIGKILL)


def _leave_a_process_behind() -> int:
    """Runs on a worker of the pool's cluster: starts a daemon the way an env's server might
    (a shell backgrounds it in a session of its own and exits, so its parent is pid 1). Ray
    stops a worker's children when it stops the worker, but not this one."""
    out = subprocess.run(
        ["sh", "-c", "setsid sleep 120 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_a_local_cluster_and_every_process_it_started_end_with_the_pool(tag, monkeypatch):
    monkeypatch.setattr(shard_ray, "REAP_GRACE_S", 2.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with EnvPool(FAULTY, 4, backend="ray", envs_per_shard=2, ray_num_cpus=2) as pool:
            assert collect(pool, Scripted(), [0, 1], 2, [0, 1]).stats["dropped"] == 0
            assert ray.is_initialized()
            orphan = ray.get(ray.remote(_leave_a_process_behind).remote())
            during = tagged_processes(tag)
            assert orphan in during
            assert len(during) >= 5  # raylet, GCS and the two shard actors at least
            cluster = shard_ray._local_cluster()
            assert cluster is not None and cluster[1] in during  # the raylet is known
    assert not ray.is_initialized()
    # The daemon is killed; on a loaded machine a Ray process slower than the 2 s grace may be
    # killed beside it.
    assert orphan in shard_ray.last_reap.get("killed", []), shard_ray.last_reap
    assert any("process(es) after shutdown" in str(w.message) for w in caught)
    assert wait_gone(tag, within_s=5) == []
    # Nothing of that cluster is left: reaping it again finds nothing to kill.
    assert shard_ray.reap_local_cluster(*cluster, grace_s=0) == []
