"""The rollout seams: env shards, rollout strategies, task samplers (registries and behaviour)."""

import dataclasses
import hashlib
import json

import gymnasium
import pytest

from creditgym.agents.base import Context, Turn
from creditgym.agents.hier_tabular import HierTabularAgent
from creditgym.agents.oracle import OracleAgent
from creditgym.agents.random_agent import RandomAgent
from creditgym.agents.tabular import TabularSoftmaxAgent
from creditgym.trainers import samplers, shards, strategies
from creditgym.trainers.checkpoint import TaskSampler
from creditgym.trainers.rollout import EnvPool, collect
from creditgym.trainers.shards import InProcessShard
from tests.trainers.test_rollout import Scripted  # registers test/Walk-v0

SMALL = {"level": "small"}


def _fingerprint(batch) -> str:
    """A hash of everything a rollout records (timings excluded)."""
    out = []
    for g in batch.groups:
        for t in g.trajectories:
            steps = [
                [
                    s.state_key,
                    s.action,
                    s.reward,
                    s.valid,
                    s.next_state_key,
                    s.observation,
                    s.admissible_actions,
                    s.text,
                    s.terminated,
                    s.truncated,
                    sorted((k, repr(v)) for k, v in s.info.items()),
                    s.spans,
                    repr(s.extras),
                ]
                for s in t.steps
            ]
            out.append([t.task_id, t.seed, t.won, t.task_type, t.info, steps])
    stats = {k: v for k, v in batch.stats.items() if not k.startswith("time_")}
    payload = json.dumps([out, sorted(stats.items())], default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def test_trajectories_are_those_of_the_loop_before_the_seams():
    """Pinned fingerprints, recorded with the pre-seam rollout (env objects in the loop, the
    oracle and random agents reading `Context.env`), on the same tasks, seeds and agents."""
    before = {
        "random": "edbfaa299d2b0ac3",
        "oracle": "964bfef751be3fb8",
        "tabular": "fc4976512d8f5835",
        "hier": "6ae358f216b2bbf1",
    }
    agents = {
        "random": RandomAgent(seed=3),
        "oracle": OracleAgent(),
        "tabular": TabularSoftmaxAgent(seed=1),
        "hier": HierTabularAgent(seed=2),
    }
    with EnvPool("creditgym/KeyRooms-v0", 12, env_kwargs=SMALL) as pool:
        got = {
            k: _fingerprint(collect(pool, a, [0, 3, 5], 4, [7, 8, 9])) for k, a in agents.items()
        }
    assert got == before
    # no admissible actions: the random agent samples the env's action space, now from data
    with EnvPool("creditgym/ToolUse-v0", 4, env_kwargs={"families": ["reasoning"]}) as pool:
        batch = collect(pool, RandomAgent(seed=5), [0, 1], 2, [3, 4])
    assert _fingerprint(batch) == "23b7aeb3963e9d9a"


def _direct(env_id, kwargs, agent, tasks, group, seeds):
    """The same episodes played on plain env objects, one after another (no pool)."""
    rows = []
    for task, seed in zip(tasks, seeds):
        for _ in range(group):
            env = gymnasium.make(env_id, **kwargs).unwrapped
            obs, info = env.reset(seed=seed, options={"task_id": task})
            done, row = False, []
            while not done:
                ctx = Context(
                    task=info["task"],
                    observation=obs,
                    admissible_actions=info["admissible_actions"],
                    state_key=info["state_key"],
                    expert_action=env.expert_action(),
                )
                action = agent.act([ctx])[0].action
                obs, reward, term, trunc, info = env.step(action)
                row.append((action, reward, info["state_key"]))
                done = term or trunc
            rows.append(row)
            env.close()
    return rows


@pytest.mark.parametrize("envs_per_shard", [1, 3, 8])
def test_shard_layout_does_not_change_trajectories(envs_per_shard):
    tasks, seeds = [1, 4], [5, 6]
    with EnvPool(
        "creditgym/KeyRooms-v0", 6, env_kwargs=SMALL, envs_per_shard=envs_per_shard
    ) as pool:
        assert len(pool.shards) == -(-6 // envs_per_shard)
        batch = collect(pool, OracleAgent(), tasks, 3, seeds)
    got = [
        [(s.action, s.reward, s.next_state_key) for s in t.steps]
        for g in batch.groups
        for t in g.trajectories
    ]
    assert got == _direct("creditgym/KeyRooms-v0", SMALL, OracleAgent(), tasks, 3, seeds)


def test_pool_routes_global_slots_and_reports_health():
    with EnvPool("test/Walk-v0", 5, envs_per_shard=2) as pool:
        assert [s.size for s in pool.shards] == [2, 2, 1] and pool.size == 5
        pool.ensure(7)
        assert [s.size for s in pool.shards] == [2, 2, 1, 2]
        res = pool.reset_many([(6, 0, 1), (0, 2, 1), (4, 1, 1)])
        assert [r.info["task_id"] for r in res] == ["walk-0", "walk-2", "walk-1"]
        res = pool.step_many([(4, "step"), (6, "crash"), (0, "stay")])
        assert res[0].obs == "pos 1" and res[0].reward == 0.0 and not res[0].terminated
        assert res[1].error == "RuntimeError: engine died" and not res[1].restart_failed
        assert res[2].obs == "pos 0" and res[2].error is None
        health = pool.health()
        assert {"rss_mb", "episodes", "last_step_s", "restarts"} <= set(health)
        assert health["episodes"] == 3 and health["restarts"] == 1 == pool.restarts
        assert health["rss_mb"] > 0 and len(health["shards"]) == 4
        with pytest.raises(IndexError, match="outside this pool of 7"):
            pool.step_many([(7, "step")])
        # branching through the pool: slot 4's state (task 1 after one step) lands in slots 1, 5
        (snap,) = pool.snapshot_many([4])
        assert snap.task_id == "walk-1" and snap.actions == ("step",) and snap.seed == 1
        res = pool.restore_many([(5, snap), (1, snap)])
        assert [(r.obs, r.error, r.diverged) for r in res] == [("pos 1", None, False)] * 2
        assert [r.obs for r in pool.step_many([(5, "step"), (1, "stay")])] == ["pos 2", "pos 1"]
        bad = dataclasses.replace(snap, state_key="elsewhere", keys=())
        (res,) = pool.restore_many([(0, bad)])
        assert res.diverged and "BranchDivergence" in res.error and pool.restarts == 1
        desc = pool.description
        assert desc.env_id == "test/Walk-v0" and desc.action_syntax == "action"
        assert not desc.has_expert and desc.action_space["max_length"] == 8192


def test_registries_list_names_and_refuse_unknown_ones():
    assert shards.available() == ["inprocess", "process", "ray"]
    assert isinstance(shards.make("inprocess", "test/Walk-v0", 1), InProcessShard)
    with pytest.raises(
        ValueError, match=r"unknown env backend 'threads'; registered: \['inprocess', 'process'"
    ):
        shards.make("threads", "test/Walk-v0", 1)
    with pytest.raises(ValueError, match="unknown env backend 'procs'"):
        EnvPool("test/Walk-v0", 1, backend="procs")
    # Implementations in other modules (branching strategies, curricula) load on first lookup.
    assert {"lockstep", "mc_chain", "tree", "retry"} <= set(strategies.available())
    assert strategies.make("lockstep").supports_async is True
    with pytest.raises(
        ValueError, match=r"unknown rollout strategy 'beam'; registered: \['lockstep', "
    ):
        strategies.make("beam")
    assert {"uniform", "dump", "sspo_priority"} <= set(samplers.available())
    with pytest.raises(ValueError, match=r"unknown task sampler 'bandit'; registered: \["):
        samplers.make("bandit", num_tasks=3, seed=0)


def test_collect_takes_a_strategy_by_name_or_object():
    with EnvPool("test/Walk-v0", 2) as pool:
        a = collect(pool, Scripted(), [1], 2, [0], strategy="lockstep")
        b = collect(pool, Scripted(), [1], 2, [0], strategy=strategies.LockstepStrategy())
        assert _fingerprint(a) == _fingerprint(b)
        with pytest.raises(ValueError, match="unknown rollout strategy"):
            collect(pool, Scripted(), [1], 2, [0], strategy="async")


def test_an_agent_that_needs_an_expert_is_refused_on_an_env_without_one():
    with EnvPool("test/Walk-v0", 1) as pool:
        with pytest.raises(TypeError, match="test/Walk-v0 has no expert"):
            collect(pool, OracleAgent(), [0], 1, [0])

        class Greedy:
            needs = frozenset({"values"})

            def act(self, contexts):
                return [Turn(action="step") for _ in contexts]

        with pytest.raises(ValueError, match=r"needs \['values'\], which no rollout provides"):
            collect(pool, Greedy(), [0], 1, [0])


def test_the_oracle_gets_the_expert_action_as_data():
    seen = []

    class Spy(OracleAgent):
        def act(self, contexts):
            seen.extend(c.expert_action for c in contexts)
            assert not hasattr(contexts[0], "env")
            return super().act(contexts)

    with EnvPool("creditgym/KeyRooms-v0", 1, env_kwargs=SMALL) as pool:
        batch = collect(pool, Spy(), [0], 1, [0])
    actions = [s.action for t in batch.groups[0] for s in t.steps]
    assert seen == actions and batch.stats["success"] == 1.0


def test_uniform_sampler_is_the_old_task_sampler_with_a_named_state():
    a = samplers.make("uniform", num_tasks=7, seed=3)
    b = TaskSampler(7, seed=3)
    assert a.next(10) == b.next(10)
    state = a.state_dict()
    assert state == {"name": "uniform", "num_tasks": 7, "seed": 3, "epoch": 1, "position": 3}
    c = samplers.make("uniform", num_tasks=7, seed=0)
    old = {k: v for k, v in state.items() if k != "name"}  # a checkpoint from before the name
    c.load_state_dict(old)
    assert c.next(9) == a.next(9)
    with pytest.raises(ValueError, match="sampler is 'dump', this run's is 'uniform'"):
        c.load_state_dict({**state, "name": "dump"})


def test_training_or_cloning_with_a_format_the_env_cannot_parse_fails_at_start(tmp_path):
    from creditgym.trainers.config import TrainConfig
    from creditgym.trainers.warmstart import warm_start
    from creditgym.trainers.wiring import build_components

    cfg = TrainConfig.model_validate({"env": {"id": "creditgym/Search-v0"}})
    match = "Search-v0 parses 'search' actions, but output_format 'action' writes"
    with pytest.raises(ValueError, match=match):
        build_components(cfg, str(tmp_path / "no-model"))  # refused before any model is read
    with pytest.raises(ValueError, match=match):
        warm_start(cfg, tmp_path / "ws", episodes=1)
    assert not (tmp_path / "ws").exists()
