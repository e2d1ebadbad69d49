"""Shard recycling under asynchronous rollouts (``rollout.mode: async`` with
``rollout.recycle_episodes``) on the ``process`` backend: shards are recycled, the counter reaches
the batch stats, and the trajectories equal those of the same run without recycling.

The agent is a pure function of the state and step (a hash picks the admissible action): in
async mode the agent's calls batch episodes by timing and an episode's slot depends on which
episodes ended first, so a seeded sampler or a slot-keyed script would not be reproducible. For
the same reason ``policy_version`` (the version when a step's request went out) is left out of
the comparison and only checked against the staleness bound.

Shards hold one env each, so every reset finds its shard idle and the number of recycles has a
floor: with ``recycle_episodes=1`` every reset of a slot after its first recycles its shard.
"""

from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np
import pytest

from creditgym import credit
from creditgym.agents.base import Turn
from creditgym.trainers.async_rollout import AsyncRollouts
from creditgym.trainers.shards import EnvPool

pytestmark = pytest.mark.slow

ENV = "creditgym/KeyRooms-v0"
KWARGS = {"level": "small", "max_steps": 5}
BATCHES = 5


class StateHash:
    """Takes the admissible action a hash of (state, step) picks."""

    def act(self, contexts):
        out = []
        for c in contexts:
            acts = c.admissible_actions
            out.append(
                Turn(action=acts[zlib.crc32(f"{c.state_key}|{c.step}".encode()) % len(acts)])
            )
        return out


def play(backend: str, envs_per_shard: int = 1, **options) -> tuple[str, float, list[float]]:
    """BATCHES batches of 1 group x 2 with S = 1 (a pool of 4 envs in shards of 1): a hash of
    the trajectories and GiGPO advantages, the recycles the pool counted, and the batches' drop
    counts."""
    pool = EnvPool(
        ENV, 1, env_kwargs=KWARGS, backend=backend, envs_per_shard=envs_per_shard, **options
    )
    rollouts = AsyncRollouts(
        pool,
        StateHash(),
        batch_groups=1,
        group_size=2,
        max_staleness=1,
        next_batch=lambda k: ([k % 3], [100 + k]),
    )
    batches = []
    try:
        for k in range(1, BATCHES + 1):
            batches.append(rollouts.take(k, timeout=180))
            if k < BATCHES:
                rollouts.publish(k)
        assert pool.size == 4
    finally:
        rollouts.close()
        # With S = 1, batch BATCHES + 1 is in flight beside batch BATCHES and may be assembled
        # first: its batch stats then hold recycles of earlier batches' resets. So the recycles
        # are counted over everything the pool did: the taken batches, batches assembled but
        # not taken, and the counts no batch took yet.
        leftover = sum(b.stats.get("shard_recycles", 0.0) for b in rollouts._ready.values())
        leftover += pool.take_counters().get("shard_recycles", 0)
        pool.close()
    out = []
    module = credit.make("gigpo")
    for k, batch in enumerate(batches, start=1):
        groups = [g for g in batch.groups if g.trajectories]
        versions = {s.policy_version for g in groups for t in g.trajectories for s in t.steps}
        assert versions and versions <= {k - 1, k}  # staleness <= S = 1
        for g in groups:
            out.append(
                [
                    g.task_id,
                    g.seed,
                    [
                        [t.won, t.error]
                        + [
                            [s.state_key, s.action, s.reward, s.next_state_key, s.observation]
                            for s in t.steps
                        ]
                        for t in g.trajectories
                    ],
                ]
            )
        out.append(np.asarray(module(groups).values).round(12).tolist())
    digest = hashlib.sha256(json.dumps(out, default=repr).encode()).hexdigest()
    recycles = leftover + sum(b.stats.get("shard_recycles", 0.0) for b in batches)
    return digest, recycles, [b.stats["dropped"] for b in batches]


def test_async_rollouts_recycle_shards_and_keep_their_trajectories():
    reference, _, dropped = play("inprocess")
    assert dropped == [0.0] * BATCHES
    plain, plain_recycles, dropped = play("process")
    assert plain_recycles == 0 and dropped == [0.0] * BATCHES
    recycled, recycles, dropped = play("process", recycle_episodes=1)
    assert dropped == [0.0] * BATCHES
    # 5 groups x 2 resets on 4 single-env shards: at least 10 - 4 resets reuse a slot.
    assert recycles >= BATCHES * 2 - 4
    assert recycled == plain == reference


def test_an_async_training_run_logs_its_recycles(tmp_path):
    """The config path: ``rollout.mode=async`` (S = 0) with ``rollout.recycle_episodes=3`` on the
    ``process`` backend, the tiny model, B = 2 groups of 3 on two shards of 3. Batch 1 resets
    each shard's 3 envs; with S = 0 batch 2 starts once batch 1 is done, so each of its group
    resets finds its shard idle and due: iteration 2 logs 2 recycles, iteration 1 none."""
    from creditgym.trainers.config import load_config
    from creditgym.trainers.logger import read_metrics
    from creditgym.trainers.train import Trainer
    from tests.trainers.test_async import TINY

    cfg = load_config(
        None,
        [
            *TINY,
            f"run_dir={tmp_path / 'run'}",
            "train.iterations=2",
            "backend.name=hf",
            "rollout.mode=async",
            "rollout.max_staleness=0",
            "rollout.env_backend=process",
            "rollout.envs_per_shard=3",
            "rollout.recycle_episodes=3",
        ],
    )
    trainer = Trainer(cfg, argv=["test"])
    try:
        trainer.run()
    finally:
        trainer.close()
    records = read_metrics(trainer.folder.metrics)
    assert [r["iteration"] for r in records] == [1, 2]
    assert [r["rollout/shard_recycles"] for r in records] == [0, 2]
    assert all(r["rollout/dropped"] == 0 for r in records)
