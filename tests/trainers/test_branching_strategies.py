"""The branching rollout strategies of issue 18 (mc_chain, tree, retry) on KeyRooms with the
tabular agent: what they record for their credit modules, their costs, and their state."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from creditgym import credit
from creditgym.agents.expert_prior import ExpertPriorTabularAgent
from creditgym.agents.tabular import TabularSoftmaxAgent
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY
from creditgym.trainers import strategies
from creditgym.trainers.config import TrainConfig
from creditgym.trainers.rollout import EnvPool
from creditgym.trainers.strategies_branching import expert_divergence, parse_reflection

SMALL = {"level": "small"}


def _pool(n: int = 4) -> EnvPool:
    return EnvPool("creditgym/KeyRooms-v0", n, env_kwargs=SMALL)


def _rows(batch):
    return [
        (
            t.role,
            t.pivot,
            t.pair_id,
            t.tree_id,
            [(s.action, s.node_id, s.mc_value) for s in t.steps],
        )
        for g in batch.groups
        for t in g.trajectories
    ]


def test_mc_chain_records_boundary_values_and_counts_continuations():
    pool, agent = _pool(), TabularSoftmaxAgent(seed=0)
    st = strategies.make("mc_chain", n_mc=2, cutpoint_interval=5)
    batch = st.collect(pool, agent, [0], 2, [3])
    assert [len(g) for g in batch.groups] == [2]  # continuations are not in the batch
    traj = batch.groups[0].trajectories[0]
    marked = [t for t, s in enumerate(traj.steps) if s.mc_value is not None]
    assert marked == st.boundaries(traj) == list(range(1, len(traj)))[::5]
    # generated = rollout steps + every continuation's new turns
    assert batch.stats["generated"] == batch.stats["steps"] + batch.stats["mc_generated"]
    assert batch.stats["mc_boundaries"] == sum(len(st.boundaries(t)) for t in batch.groups[0])
    assert batch.stats["mc_restores"] == 2 * batch.stats["mc_boundaries"]
    with pytest.raises(ValueError, match="low_prob"):
        strategies.make("mc_chain", cutpoint="low_prob").boundaries(traj)


def test_mc_value_of_a_greedy_policy_is_the_recorded_return_to_go():
    # A greedy agent is deterministic and the env is too: every continuation from s_t replays
    # the recorded suffix, so V(s_t) = sum_{u >= t} r_u of the record, exactly.
    pool, agent = _pool(), TabularSoftmaxAgent(seed=0, greedy=True)
    batch = strategies.make("mc_chain", n_mc=2, mc_v0=True).collect(pool, agent, [0, 1], 1, [0, 1])
    for g in batch.groups:
        (traj,) = g.trajectories
        r = traj.rewards(DEFAULT_INVALID_PENALTY)
        for t, s in enumerate(traj.steps):
            assert s.mc_value == pytest.approx(r[t:].sum(), abs=1e-12)
    adv = credit.make("spo_chain", v0="mc", whiten=False)(batch.groups)
    np.testing.assert_allclose(adv.values, 0.0, atol=1e-12)  # a deterministic policy: A = 0


def test_spo_tree_builds_the_tree_with_node_ids_and_trains_each_edge_once():
    pool, agent = _pool(), TabularSoftmaxAgent(seed=0)
    st = strategies.make("tree", branching=(2, 2), segment_turns=1, edge_budget_per_task=100)
    batch = st.collect(pool, agent, [0], 4, [0])
    (g,) = batch.groups
    assert len(g) == 4  # 2 x 2 leaves (none finished in one turn on KeyRooms small)
    first = [t.steps[0].node_id for t in g.trajectories]
    assert first == ["0.0", "0.0", "0.1", "0.1"]
    assert [t.steps[1].node_id for t in g.trajectories] == ["0.0.0", "0.0.1", "0.1.0", "0.1.1"]
    assert all(s.node_id == t.steps[1].node_id for t in g.trajectories for s in t.steps[1:])
    assert [t.steps[1].parent_node_id for t in g.trajectories] == first
    # Shared first steps are copies of one recorded step (same action).
    assert g.trajectories[0].steps[0].action == g.trajectories[1].steps[0].action
    # Cost: 2 first turns + 4 continuations to the end.
    leaf_turns = sum(len(t) - 1 for t in g.trajectories)
    assert batch.stats["generated"] == 2 + leaf_turns
    adv = credit.make("spo_tree")(batch.groups)
    lengths = np.cumsum([0] + [len(t) for t in g.trajectories])
    # The second copy of each shared first step (leaves 1 and 3) is never trained.
    assert not adv.mask[lengths[1]] and not adv.mask[lengths[3]]
    assert np.all(np.isfinite(adv.values))


def test_spo_edge_buffer_budget_age_and_exact_state_round_trip():
    def run(st, pool, agent, its):
        out = []
        for i in range(its):
            b = st.collect(pool, agent, [0, 1], 4, [i, i + 1])
            out.append((_rows(b), b.stats["edges_trained"], b.stats["edges_buffered"]))
        return out

    kwargs = {"branching": (3, 3), "edge_budget_per_task": 2, "edge_max_age": 1, "seed": 7}
    st = strategies.make("tree", **kwargs)
    first = run(st, _pool(), ExpertPriorTabularAgent(prior_beta=1.5, seed=0), 2)
    for _, trained, _ in first:
        assert trained <= 2 * 2  # at most 2 edges per task per iteration
    # Exact resume: the state after 2 iterations, pickled and loaded into a fresh strategy,
    # continues exactly as the original (same agent state: a fresh agent replayed 2 iterations).
    saved = pickle.loads(pickle.dumps(st.state_dict()))
    assert any(e[2] for v in saved["buffer"].values() for e in v), "no edge waits in the buffer"
    agent_a = ExpertPriorTabularAgent(prior_beta=1.5, seed=0)
    run(strategies.make("tree", **kwargs), _pool(), agent_a, 2)
    cont_a = run(st, _pool(), agent_a, 2)
    agent_b = ExpertPriorTabularAgent(prior_beta=1.5, seed=0)
    run(strategies.make("tree", **kwargs), _pool(), agent_b, 2)
    resumed = strategies.make("tree", **kwargs)
    resumed.load_state_dict(saved)
    cont_b = run(resumed, _pool(), agent_b, 2)
    assert cont_a == cont_b
    # No buffered edge is older than edge_max_age iterations.
    assert all(resumed.iteration - e[0] <= 1 for v in resumed.buffer.values() for e in v)


def test_tree_grpo_mode_m_trees_of_k_leaves():
    pool, agent = _pool(), TabularSoftmaxAgent(seed=0)
    st = strategies.make("tree", mode="tree_grpo", m=2, n=2, l=1, k=3, seed=1)
    batch = st.collect(pool, agent, [0, 1], 8, [0, 1])
    for g in batch.groups:
        trees = sorted({t.tree_id for t in g.trajectories})
        assert len(trees) == 2 and len(g) == 6
        for t in g.trajectories:
            # node ids: one per turn, the parent chain follows the trajectory
            assert [s.parent_node_id for s in t.steps[1:]] == [s.node_id for s in t.steps[:-1]]
    # 2 chains per task, then 2 expansions per tree: generated = new steps only
    new = sum(len(t) - (t.pivot or 0) for g in batch.groups for t in g.trajectories)
    assert batch.stats["generated"] <= new
    adv = credit.make("tree_grpo")(batch.groups)
    assert adv.diagnostics["singleton_trees"] == 0


def test_retry_pivot_is_the_first_non_expert_step_and_the_retry_plays_the_expert_there():
    pool, agent = _pool(), TabularSoftmaxAgent(seed=0)
    batch = strategies.make("retry").collect(pool, agent, [0, 1], 4, [0, 1])
    retries = [t for g in batch.groups for t in g.trajectories if t.role == "retry"]
    assert retries and batch.stats["retries"] == len(retries)
    bases = {t.pair_id: t for g in batch.groups for t in g.trajectories if t.role == "base"}
    assert len(bases) == 4  # G/2 = 2 bases per task
    ks = expert_divergence(_pool(), [bases[r.pair_id] for r in retries])
    check = _pool()
    for r, k in zip(retries, ks):
        base = bases[r.pair_id]
        assert r.pivot == k
        assert [s.action for s in r.steps[:k]] == [s.action for s in base.steps[:k]]
        # the env expert's action at the pivot state (replayed on a fresh env)
        from creditgym.envs.branching import snapshot_from_record

        check.restore_many([(0, snapshot_from_record(check.env_id, check.split, base, k))])
        assert r.steps[k].action == check.expert_many([0])[0] != base.steps[k].action
    adv = credit.make("r3l")(batch.groups)
    # Pivotal mask: the first k steps of each retry and its base are out of the loss.
    flat = [(t, i) for g in batch.groups for t in g.trajectories for i in range(len(t))]
    for (t, i), m in zip(flat, adv.step_mask()):
        k = (
            t.pivot
            if t.role == "retry"
            else max((r.pivot for r in retries if r.pair_id == t.pair_id), default=0)
        )
        assert m == (i >= k)
    assert batch.stats["generated"] == batch.stats["steps"] + batch.stats["retry_generated"]


def test_branching_strategies_refuse_async_and_bad_options():
    for name in ("mc_chain", "tree", "retry"):
        cls = strategies.strategy_class(name)
        assert not cls.supports_async and cls.needs_branching
        with pytest.raises(ValueError, match="does not support"):
            TrainConfig.model_validate(
                {
                    "rollout": {"strategy": name, "mode": "async"},
                    "env": {"id": "creditgym/KeyRooms-v0"},
                }
            )
    with pytest.raises(ValueError, match="cutpoint"):
        strategies.make("mc_chain", cutpoint="token")
    with pytest.raises(ValueError, match="mode"):
        strategies.make("tree", mode="mcts")
    with pytest.raises(ValueError, match="guide='none'"):
        strategies.make("retry", reflector="llm")
    with pytest.raises(TypeError, match="LLM agent"):
        strategies.make("retry", reflector="llm", guide="none").collect(
            _pool(), TabularSoftmaxAgent(seed=0), [0], 2, [0]
        )


def test_reflection_reports_parse_only_when_valid():
    good = (
        'Here: {"trajectory_summary": "s", "root_cause_analysis": "r", "trajectory_outcome": '
        '"failure", "improvement_suggestion": "take the key", "retry_from_step": 2} done'
    )
    assert parse_reflection(good, 3)["retry_from_step"] == 2
    assert parse_reflection(good, 2) is None  # k must be < T_base
    assert parse_reflection(good.replace('"failure"', '"meh"'), 3) is None
    assert (
        parse_reflection(good.replace('"retry_from_step": 2', '"retry_from_step": "2"'), 3) is None
    )
    assert parse_reflection(good.replace('"root_cause_analysis": "r", ', ""), 3) is None
    assert parse_reflection("no json here", 3) is None
    assert parse_reflection("{not json}", 3) is None
