"""The ``ray`` env backend on a two-node cluster (`ray.cluster_utils.Cluster`, one per module):
the same trajectories as in-process, and a node lost mid-rollout.

Every Ray process started here carries an environment tag, and the module's teardown checks that
none is left once the cluster is shut down.
"""

from __future__ import annotations

import os
import uuid

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from creditgym.trainers.rollout import EnvPool, collect  # noqa: E402
from tests.trainers.faulty_envs import FAULTY  # noqa: E402
from tests.trainers.test_env_backends import play, reference, wait_gone  # noqa: E402
from tests.trainers.test_rollout import Scripted  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    tag = uuid.uuid4().hex
    saved = os.environ.get("CREDITGYM_TEST_TAG")
    os.environ["CREDITGYM_TEST_TAG"] = tag
    try:
        c = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 2, "include_dashboard": False},
        )
        worker = c.add_node(num_cpus=1, object_store_memory=100_000_000)
        ray.init(address=c.address, log_to_driver=False)
        c.wait_for_nodes()
        yield c, worker
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        if saved is None:
            os.environ.pop("CREDITGYM_TEST_TAG", None)
        else:
            os.environ["CREDITGYM_TEST_TAG"] = saved
    assert wait_gone(tag, within_s=30) == []  # no Ray or env process outlives the cluster


def test_ray_backend_gives_the_inprocess_trajectories_graphs_and_advantages(cluster):
    assert play("ray") == reference()


def test_a_node_lost_mid_rollout_drops_its_episodes_and_its_shard_is_rebuilt(cluster):
    c, worker = cluster
    options = {"backend": "ray", "envs_per_shard": 3, "ray_cpus_per_shard": 1}
    with EnvPool(FAULTY, 6, **options) as pool:
        nodes = [s["node_id"] for s in pool.health()["shards"]]
        assert sorted(nodes) == sorted([c.head_node.node_id, worker.node_id])  # one on each
        lost = nodes.index(worker.node_id)  # group `lost` plays on the node that goes

        def remove_node(turn: int, active: int) -> None:
            if turn == 1:
                c.remove_node(worker)

        batch = collect(pool, Scripted(), [4, 4], 3, [0, 1], on_turn=remove_node)
        sizes = [len(g.trajectories) for g in batch.groups]
        assert sizes[lost] == 0 and sizes[1 - lost] == 3
        assert batch.stats["env_errors"] == 3 and batch.stats["dropped_groups"] == 1
        assert all(t.won for t in batch.groups[1 - lost].trajectories)
        # The next iteration runs on rebuilt shards, all on the head node.
        again = collect(pool, Scripted(), [4, 4], 3, [0, 1])
        assert again.stats["dropped"] == 0 and again.stats["success"] == 1.0
        counts = pool.take_counters()
        assert counts["shard_lost_episodes"] == 3 and counts["shard_restarts"] == 1
        assert {s["node_id"] for s in pool.health()["shards"]} == {c.head_node.node_id}
