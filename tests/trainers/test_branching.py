"""Branching rollouts (`creditgym.trainers.branching`): restore the state before step t of a
recorded trajectory k times and continue under the current policy."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from creditgym.agents.backends import SamplingConfig
from creditgym.agents.backends.hf import HFBackend
from creditgym.agents.base import Context, Turn
from creditgym.agents.hier_tabular import HierTabularAgent
from creditgym.agents.llm import LLMAgent
from creditgym.agents.models import tiny_model
from creditgym.agents.tabular import TabularSoftmaxAgent
from creditgym.trainers.branching import BranchRequest, branch, branch_many
from creditgym.trainers.rollout import EnvPool, collect
from tests.agents.test_llm import CountingBackend

SMALL = {"level": "small"}


class Recording:
    """Wraps an agent and records the contexts of every `act` call."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[list[Context]] = []

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        # (the rollout keeps appending to each episode's history list: copy it)
        self.calls.append([dataclasses.replace(c, history=list(c.history)) for c in contexts])
        return self.inner.act(contexts)

    def __getattr__(self, name):  # branch_memory, needs, ...
        return getattr(self.inner, name)


class PeekSubgoal(Recording):
    """Records the hierarchical agent's current subgoal of each context's episode before acting."""

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        self.seen = getattr(self, "seen", [])
        self.seen.append([self.inner._current.get(c.episode) for c in contexts])
        return super().act(contexts)


class FollowRecord:
    """Plays the recorded actions of one trajectory (by step number): a branch of a
    deterministic env must then reproduce the recorded continuation exactly."""

    def __init__(self, traj):
        self.actions = [s.action for s in traj.steps]

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        return [Turn(action=self.actions[c.step], text=self.actions[c.step]) for c in contexts]


def _record(level: str = "small", tasks=(0, 1), g: int = 2, seed: int = 0):
    pool = EnvPool("creditgym/KeyRooms-v0", len(tasks) * g, env_kwargs={"level": level})
    agent = TabularSoftmaxAgent(seed=seed)
    batch = collect(pool, agent, list(tasks), g, seeds=[seed + i for i in range(len(tasks))])
    return pool, agent, [t for grp in batch.groups for t in grp.trajectories]


def _fields(step):
    return (step.observation, step.action, step.reward, step.state_key, step.next_state_key,
            step.admissible_actions, step.terminated, step.truncated)  # fmt: skip


def test_following_the_record_reproduces_it_from_every_step():
    pool, _, trajs = _record()
    traj = max(trajs, key=len)
    ts = [0, len(traj) // 2, len(traj) - 1]
    batch = branch_many(pool, FollowRecord(traj), [BranchRequest(traj, t, 2) for t in ts])
    assert batch.stats["diverged"] == 0 and not batch.dropped
    for t, res in zip(ts, batch.results):
        assert len(res.continuations) == 2
        for cont in res.continuations:
            assert [_fields(s) for s in cont.steps] == [_fields(s) for s in traj.steps]
            assert cont.won == traj.won and cont.info["branch"]["pivot"] == t
    assert batch.stats["generated"] == sum(2 * (len(traj) - t) for t in ts)


def test_continuations_of_a_state_share_one_act_call_and_keep_the_prefix():
    pool, agent, trajs = _record()
    rec = Recording(agent)
    requests = [BranchRequest(trajs[0], 2, 3), BranchRequest(trajs[1], 1, 2)]
    batch = branch_many(pool, rec, requests)
    first = rec.calls[0]
    assert len(first) == 5  # every continuation of both states in the first generation call
    for ctx, (req, _) in zip(first, [(r, j) for r in requests for j in range(r.k)]):
        src = req.traj.steps
        assert ctx.step == req.t and ctx.observation == src[req.t].observation
        assert ctx.state_key == src[req.t].state_key
        assert ctx.history == [(s.observation, s.action) for s in src[: req.t]]
    assert len(rec.calls) == batch.stats["turns"]
    for req, res in zip(requests, batch.results):
        for cont in res.continuations:
            prefix = cont.steps[: req.t]
            assert all(a is not b and a == b for a, b in zip(prefix, req.traj.steps))
            assert cont.steps[req.t].state_key == req.traj.steps[req.t].state_key
            assert cont.steps[-1].terminated or cont.steps[-1].truncated


def test_native_and_replay_snapshots_give_the_same_continuations():
    pool, agent, trajs = _record()
    traj = trajs[0]
    slots = pool.snapshot_many([0])  # slot 0 played trajs[0]: its final state
    assert slots[0].payload is not None and slots[0].state_key == traj.steps[-1].next_state_key
    t = len(traj) - 1
    replayed = branch(pool, FollowRecord(traj), traj, t, 2, first_slot=1)
    again = branch(pool, FollowRecord(traj), traj, t, 2, snapshot_end=True)
    assert [_fields(s) for s in replayed.continuations[0].steps] == [
        _fields(s) for s in again.continuations[1].steps
    ]
    end = again.end_snapshots[0]
    assert end.state_key == slots[0].state_key and end.actions == slots[0].actions


def test_divergent_branches_are_dropped_and_counted():
    pool, agent, trajs = _record()
    traj = trajs[0]
    good = BranchRequest(traj, 1, 2)
    wrong = dataclasses.replace(
        good, snapshot=dataclasses.replace(pool.snapshot_many([0])[0], state_key="nowhere", keys=())
    )
    batch = branch_many(pool, agent, [good, wrong])
    assert batch.stats["diverged"] == 2 and len(batch.dropped) == 2
    assert batch.results[1].continuations == [] and batch.results[1].diverged == 2
    assert len(batch.results[0].continuations) == 2 and batch.results[0].diverged == 0
    assert all("BranchDivergence" in d.error for d in batch.dropped)


def test_horizon_stops_continuations_and_marks_them_open():
    pool, agent, trajs = _record("medium", tasks=(3,), g=1)
    traj = trajs[0]
    res = branch(pool, agent, traj, 0, 3, horizon=2)
    assert all(len(c) == 2 and c.info["branch"]["open"] for c in res.continuations)


def test_bad_requests_are_clear_errors():
    pool, agent, trajs = _record()
    traj = trajs[0]
    with pytest.raises(ValueError, match="outside"):
        branch(pool, agent, traj, len(traj), 1)
    with pytest.raises(ValueError, match="k >= 1"):
        branch(pool, agent, traj, 0, 0)
    with pytest.raises(ValueError, match="horizon"):
        branch(pool, agent, traj, 0, 1, horizon=0)


def test_hierarchical_agent_continues_with_the_recorded_subgoal():
    pool = EnvPool("creditgym/KeyRooms-v0", 2, env_kwargs=SMALL)
    agent = HierTabularAgent(seed=0)
    traj = collect(pool, agent, [0], 2, seeds=[0]).groups[0].trajectories[0]
    peek = PeekSubgoal(agent)
    t = len(traj) - 1
    agent._current.clear()
    res = branch(pool, peek, traj, t, 2)
    assert peek.seen[0] == [traj.steps[t - 1].extras["subgoal"]] * 2
    assert len(res.continuations) == 2


@pytest.fixture(scope="module")
def hf() -> HFBackend:
    return HFBackend(tiny_model())


@pytest.mark.slow  # building the tiny model takes ~5 s
@pytest.mark.parametrize("context", ["steps", "concat"])
def test_llm_branch_rebuilds_the_recorded_prompt_without_regenerating(hf, context):
    """The prompt at step t is rebuilt from the record (token for token), prefix steps keep their
    tokens, and the only generation calls are the continuations' own turns."""
    backend = CountingBackend(hf)
    sampling = SamplingConfig(max_new_tokens=6, seed=0)
    agent = LLMAgent(backend, hf.tokenizer, sampling=sampling, context=context)
    pool = EnvPool("creditgym/KeyRooms-v0", 2, env_kwargs={"level": "small", "max_steps": 4})
    traj = collect(pool, agent, [0], 1, seeds=[0]).groups[0].trajectories[0]
    assert len(traj) == 4
    backend.calls.clear()
    t = 2
    res = branch(pool, agent, traj, t, 2, first_slot=1)
    prompts, _ = backend.calls[0]
    assert len(prompts) == 2 and prompts[0] == list(traj.steps[t].prompt_ids) == prompts[1]
    assert len(backend.calls) == len(traj) - t  # no call for the prefix
    for cont in res.continuations:
        for a, b in zip(cont.steps[:t], traj.steps[:t]):
            assert a.prompt_ids == b.prompt_ids and a.response_ids == b.response_ids
            assert a.sampler_logprobs == b.sampler_logprobs
        assert cont.steps[t].prompt_ids == traj.steps[t].prompt_ids


def test_config_refuses_branching_on_an_env_that_cannot_branch(monkeypatch):
    from creditgym.credit.grpo import GRPO
    from creditgym.trainers.config import ConfigError, from_dict
    from creditgym.trainers.strategies import LockstepStrategy

    env = {"env": {"id": "creditgym/OpenEnv-v0"}, "credit": {"name": "grpo"}}
    from_dict(env)  # lockstep needs no branching
    monkeypatch.setattr(LockstepStrategy, "needs_branching", True)
    with pytest.raises(ConfigError, match=r"rollout.strategy='lockstep' needs env branching.*"
                       r"creditgym/OpenEnv-v0 cannot branch"):  # fmt: skip
        from_dict(env)
    from_dict({"env": {"id": "creditgym/KeyRooms-v0"}})  # KeyRooms branches
    monkeypatch.setattr(LockstepStrategy, "needs_branching", False)
    monkeypatch.setattr(GRPO, "needs", frozenset({"branching"}))
    with pytest.raises(ConfigError, match="credit method 'grpo' needs env branching"):
        from_dict(env)


@pytest.mark.slow  # spawns worker processes
def test_branching_through_the_process_backend_equals_in_process():
    def run(backend):
        pool = EnvPool(
            "creditgym/KeyRooms-v0", 8, env_kwargs=SMALL, backend=backend, envs_per_shard=4
        )
        with pool:
            trajs = [
                t
                for g in collect(pool, TabularSoftmaxAgent(seed=0), [0, 1], 2, [0, 1]).groups
                for t in g.trajectories
            ]
            requests = [BranchRequest(trajs[0], 2, 3), BranchRequest(trajs[3], 1, 3)]
            batch = branch_many(pool, TabularSoftmaxAgent(seed=1), requests, snapshot_end=True)
        conts = [[_fields(s) for s in c.steps] for r in batch.results for c in r.continuations]
        ends = [s.state_key for r in batch.results for s in r.end_snapshots]
        return conts, ends, batch.stats["generated"]

    assert run("process") == run("inprocess")


def test_open_continuations_branch_again_from_their_end():
    """A tree's next level: continuations cut by a horizon branch from their last state, from
    the record (replay) or from their end snapshots (native), with the same results."""
    pool, agent, trajs = _record("medium", tasks=(3,), g=1)
    first = branch(pool, agent, trajs[0], 0, 2, horizon=2, snapshot_end=True)
    leaf = first.continuations[0]
    assert len(leaf) == 2 and leaf.info["branch"]["open"]
    follow = FollowRecord(trajs[0])  # plays the source's actions by step number
    by_record = branch(pool, follow, leaf, 2, 1, horizon=1)
    request = BranchRequest(leaf, 2, 1, snapshot=first.end_snapshots[0])
    by_snapshot = branch_many(pool, follow, [request], horizon=1).results[0]
    a, b = by_record.continuations[0], by_snapshot.continuations[0]
    assert len(a) == 3 and [_fields(s) for s in a.steps] == [_fields(s) for s in b.steps]
    assert a.steps[2].state_key == leaf.steps[1].next_state_key
