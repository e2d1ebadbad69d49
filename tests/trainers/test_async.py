"""Asynchronous rollouts (``rollout.mode: async``): the admission rule, the S = 0 equality with
sync training on recorded responses, staleness and the decoupled-PPO correction, resume.

The equality test records the responses the tiny model samples in a sync run and replays them in
an async run with S = 0 (an LLM backend's samples may depend on batching, so fresh samples would
not be comparable). Both runs use the decoupled-PPO objective, so they must take exactly the
same updates: the parameters are compared with ``torch.equal``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from creditgym.agents.backends import register_backend
from creditgym.agents.backends.hf import HFBackend
from creditgym.agents.backends.replay import RecordingBackend, ReplayBackend
from creditgym.agents.base import Turn
from creditgym.trainers import samplers
from creditgym.trainers.async_rollout import AsyncRollouts, staleness_metrics
from creditgym.trainers.config import ConfigError, load_config
from creditgym.trainers.dump import read_rows
from creditgym.trainers.logger import read_metrics
from creditgym.trainers.shards import EnvPool
from creditgym.trainers.train import Trainer, group_seeds

TINY = [
    "model.name=tiny",
    "env.id=creditgym/KeyRooms-v0",
    "env.kwargs={level: small, max_steps: 3}",
    "agent.max_new_tokens=4",
    "agent.max_prompt_tokens=512",
    "rollout.tasks_per_iteration=2",
    "rollout.group_size=3",
    "learner.lr=1.0e-2",
    "learner.finetune=full",
    "eval.tasks=0",
    "logging.tensorboard=false",
    "logging.plot=false",
    "logging.progress=false",
]

#: Filled by the backend factories below (one test at a time uses them).
_STATE: dict[str, object] = {}


def _recording(model_path, learner=None, **kwargs):
    backend = RecordingBackend(HFBackend(model_path, learner=learner, **kwargs))
    _STATE["recorder"] = backend
    return backend


def _replaying(model_path, learner=None, **kwargs):
    backend = ReplayBackend(_STATE["recorder"].records)
    _STATE["replay"] = backend
    return backend


register_backend("test-recording-hf", _recording)
register_backend("test-replay", _replaying)


def _run(tmp_path: Path, name: str, *extra: str) -> Trainer:
    cfg = load_config(None, [*TINY, f"run_dir={tmp_path / name}", *extra])
    trainer = Trainer(cfg, argv=["test"])
    try:
        trainer.run()
    finally:
        trainer.close()
    return trainer


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.learner.model.state_dict().items()}


@pytest.mark.slow
def test_async_s0_trains_on_the_sync_batches(tmp_path: Path) -> None:
    k = 3
    common = [f"train.iterations={k}", "learner.decoupled=true"]
    sync = _run(tmp_path, "sync", *common, "backend.name=test-recording-hf")
    asyn = _run(
        tmp_path,
        "async",
        *common,
        "backend.name=test-replay",
        "rollout.mode=async",
        "rollout.max_staleness=0",
    )
    assert _STATE["replay"].remaining == 0  # every recorded response was asked for again
    a, b = _params(sync), _params(asyn)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[n], b[n]) for n in a)
    initial = Trainer(load_config(None, [*TINY, f"run_dir={tmp_path / 'init'}"]))
    initial.build(pools=False)
    assert not all(torch.equal(a[n], v) for n, v in _params(initial).items())  # it did train

    for i in range(1, k + 1):
        rows_sync = read_rows(sync.folder.trajectories(i))
        rows_async = read_rows(asyn.folder.trajectories(i))
        assert rows_sync == rows_async  # same batch, same advantages, policy_version = i
        assert {r["policy_version"] for r in rows_async} == {i}
    records = read_metrics(asyn.folder.metrics)
    assert all(r["rollout/staleness/0"] == 1.0 for r in records)
    assert all(r["train/tis_clip_frac"] == 0.0 for r in records)


@pytest.mark.slow
def test_async_staleness_is_bounded_and_resume_regenerates(tmp_path: Path) -> None:
    extra = ["rollout.mode=async", "rollout.max_staleness=1", "backend.name=hf"]
    first = _run(tmp_path, "run", *extra, "train.iterations=2")
    records = read_metrics(first.folder.metrics)
    assert [r["iteration"] for r in records] == [1, 2]
    for r in records:
        assert r["rollout/staleness_max"] <= 1
        assert 0.0 <= r["train/tis_clip_frac"] <= 1.0
    # Resume to 3 iterations: batch 3 (maybe in flight when the first run ended) is drawn again
    # from the checkpointed sampler, so every iteration plays the sampler's tasks in order.
    cfg = load_config(None, [*TINY, f"run_dir={tmp_path / 'run'}", *extra, "train.iterations=3"])
    resumed = Trainer(cfg, resume=True, argv=["test"])
    try:
        resumed.run()
    finally:
        resumed.close()
    records = read_metrics(resumed.folder.metrics)
    assert [r["iteration"] for r in records] == [1, 2, 3]
    size = json.loads(resumed.folder.meta.read_text())["created"]["panels"]["train"]["size"]
    sampler = samplers.make(cfg.sampler.name, num_tasks=size, seed=cfg.seed)
    expected = [sampler.next(cfg.rollout.tasks_per_iteration) for _ in range(3)]
    assert [r["rollout/tasks"] for r in records] == expected
    seeds = group_seeds(cfg.seed, 3, cfg.rollout.tasks_per_iteration)
    assert sorted({r["group_seed"] for r in read_rows(resumed.folder.trajectories(3))}) == sorted(
        seeds
    )


class _FirstAction:
    """A scripted agent that always takes the first admissible action."""

    def act(self, contexts):
        return [Turn(action=c.admissible_actions[0]) for c in contexts]


def test_admission_rule_bounds_groups_in_flight() -> None:
    """Groups admitted <= (S + v + 1) x B: with v = 0, S = 1 and B = 2 only batches 1 and 2 are
    drawn, however long the learner takes; publishing v = 1 lets batch 3 in."""
    drawn: list[int] = []

    def next_batch(k: int):
        drawn.append(k)
        return [k, k + 100], [k, k + 1]

    pool = EnvPool("creditgym/KeyRooms-v0", 1, env_kwargs={"level": "small", "max_steps": 3})
    rollouts = AsyncRollouts(
        pool, _FirstAction(), batch_groups=2, group_size=2, max_staleness=1, next_batch=next_batch
    )
    try:
        assert pool.size == 8  # (S + 1) x B x G envs
        b1 = rollouts.take(1, timeout=60)
        b2 = rollouts.take(2, timeout=60)
        assert drawn == [1, 2]
        with pytest.raises(TimeoutError):
            rollouts.take(3, timeout=0.5)
        rollouts.publish(1)
        b3 = rollouts.take(3, timeout=60)
        assert drawn == [1, 2, 3]
        for k, batch in ((1, b1), (2, b2), (3, b3)):
            assert [g.seed for g in batch.groups] == [k, k + 1]
            assert all(len(g.trajectories) == 2 for g in batch.groups)
            versions = {
                s.policy_version for g in batch.groups for t in g.trajectories for s in t.steps
            }
            assert versions == ({1} if k < 3 else {2})
        assert staleness_metrics(b2.groups, 2)["rollout/staleness/1"] == 1.0
    finally:
        rollouts.close()
        pool.close()


def test_async_refuses_a_strategy_without_async_support() -> None:
    from creditgym.trainers import strategies

    @strategies.register_strategy("test-sync-only")
    class SyncOnly(strategies.LockstepStrategy):
        supports_async = False

    try:
        with pytest.raises(ConfigError, match="does not support rollout.mode='async'"):
            load_config(None, ["rollout.mode=async", "rollout.strategy=test-sync-only"])
        load_config(None, ["rollout.mode=sync", "rollout.strategy=test-sync-only"])
    finally:
        strategies._STRATEGIES.unregister("test-sync-only")


def test_decoupled_ppo_weights_the_clipped_surrogate() -> None:
    """w = min(pi_prox / mu, cap) multiplies each token's PPO-clip loss (clipped against
    pi_prox); tokens whose weight hit the cap are counted."""
    from creditgym.trainers.loss import PPOClip, TokenBatch, ppo_clip

    logp = torch.tensor([-1.0, -2.0, -0.5, -1.5])
    prox = torch.tensor([-1.1, -2.0, -0.4, -1.5])
    mu = torch.tensor([-1.1, -3.0, -0.2, -1.0])  # weights 1, e^1 -> 2 (capped), e^-0.2, e^-0.5
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0])
    ones = torch.ones(4)
    batch = TokenBatch(logp, prox, adv, ones, ones, 4.0, sampler_logp=mu)
    out = PPOClip(0.2, 0.2, tis_cap=2.0)(batch)
    weight = torch.clamp(torch.exp(prox - mu), max=2.0)
    per_token, _ = ppo_clip(logp, prox, adv, 0.2, 0.2)
    assert torch.allclose(out.loss, (weight * per_token).sum() / 4)
    assert float(out.weight_clip_count) == 1.0
    assert torch.allclose(out.weight_sum, weight.sum())
    plain = PPOClip(0.2, 0.2)(TokenBatch(logp, prox, adv, ones, ones, 4.0))
    assert plain.weight_clip_count is None
    assert torch.allclose(plain.loss, per_token.sum() / 4)
