"""The credit benchmark's recipes, MC reference, fidelity scores and expert-prior start."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from creditgym.agents.expert_prior import ExpertPriorTabularAgent
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers import recipes, samplers
from creditgym.trainers.bench_config import BenchmarkConfig
from creditgym.trainers.config import ConfigError, load
from creditgym.trainers.reference import fidelity_scores, mc_reference, pairwise_order, pearson
from creditgym.trainers.rollout import EnvPool, collect

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("_bench", ROOT / "scripts/benchmark_credit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _group(trajs: list[list[tuple[str, str]]]) -> TrajectoryGroup:
    g = TrajectoryGroup(task_id="t", seed=0)
    for steps in trajs:
        g.trajectories.append(
            Trajectory(steps=[Step(state_key=s, action=a, reward=0.0) for s, a in steps])
        )
    return g


def test_pairwise_order_by_hand():
    # steps (flat): 0 s/a, 1 s/b, 2 s/a, 3 u/a, 4 s/c ; 5 s/a is another group's
    g1 = _group([[("s", "a"), ("s", "b")], [("s", "a"), ("u", "a"), ("s", "c")]])
    g2 = _group([[("s", "b")]])
    ref = np.array([1.0, 0.0, 1.0, 5.0, 1.0, 9.0])
    method = np.array([2.0, 1.0, 0.5, 0.0, 2.0, -9.0])
    # pairs with different actions at s in g1: (0,1) (0,4) (1,2) (1,4) (2,4); g2 has one step.
    # ref diffs: 1, 0 (tie, skipped), -1, -1, 0 (skipped) -> 3 pairs
    # method diffs: 1 (agree), 0.5-1 ... (1,2): 1-0.5=0.5 vs ref -1: disagree; (1,4): -1 agree
    acc, pairs = pairwise_order([g1, g2], method, ref)
    assert pairs == 3 and acc == pytest.approx(2 / 3)
    tied = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 0.0])  # the method ties every pair: 1/2 each
    assert pairwise_order([g1, g2], tied, ref) == (0.5, 3)
    no_ref = np.full(6, np.nan)
    assert pairwise_order([g1, g2], method, no_ref) == (None, 0)


def test_attenuation_correction_by_hand():
    g = _group([[("s", "a")] * 5])
    method = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ref = np.array([1.0, 3.0, 2.0, 5.0, 4.0])  # r = 0.8
    h1 = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    h2 = np.array([2.0, 1.0, 3.0, 5.0, 4.0])  # r_hh = 0.8 -> rel = 1.6 / 1.8
    out = fidelity_scores([g], method, ref, (h1, h2))
    assert out["pearson"] == pytest.approx(0.8)
    assert out["reliability"] == pytest.approx(1.6 / 1.8)
    assert out["pearson_corrected"] == pytest.approx(0.8 / np.sqrt(1.6 / 1.8))
    exact = fidelity_scores([g], method, ref)
    assert exact["pearson_corrected"] == exact["pearson"] and exact["reliability"] == 1.0
    assert pearson(np.ones(5), ref) is None


def test_recipes_resolve_and_refuse():
    assert recipes.resolve("gigpo") == recipes.Recipe(name="gigpo", credit="gigpo")
    with pytest.raises(ValueError, match="unknown benchmark method 'nope'.*credit modules"):
        recipes.resolve("nope")
    with pytest.raises(ConfigError, match="unknown benchmark method"):
        load(BenchmarkConfig, None, ["methods=nope"])
    with pytest.raises(ConfigError, match="empg needs"):
        load(BenchmarkConfig, None, ["methods=empg"])
    with pytest.raises(ValueError, match="unknown plug-in kind"):
        recipes.build_plugin("cache", "x", {})


def test_a_recipe_runs_its_sampler_and_counts_turns(tmp_path):
    bench = _script()
    recipes.register_recipe(
        "_test_grpo_uniform", credit="grpo", sampler="uniform", credit_options={"std": "population"}
    )
    try:
        cfg = load(
            BenchmarkConfig, None,
            ["env_kwargs.level=small", "methods=[grpo,_test_grpo_uniform]", "iterations=2",
             "groups=2", "group_size=3", "tasks=4", "eval_every=1", "eval_episodes=1",
             "fidelity_every=1", "dump_iterations=none", f"out={tmp_path}"],
        ).resolved()  # fmt: skip
        assert cfg.options_for("_test_grpo_uniform")["std"] == "population"
        plain = bench.run_one(cfg, "grpo", 0)
        run = bench.run_one(cfg, "_test_grpo_uniform", 0)
    finally:
        recipes._RECIPES.unregister("_test_grpo_uniform")
    for r in (plain, run):
        turns = r["curve"]["eval_turns"]
        assert turns[0] == 0 and turns == sorted(turns) and turns[-1] == r["generated_turns"] > 0
        assert len(r["curve"]["pairwise"]) == len(r["curve"]["fidelity"]) == 2
        assert r["reference"] == "exact"
    # the benchmark's own seeded choice, and the recipe's sampler
    rng = np.random.default_rng(0)
    assert plain["curve"]["tasks"] == [rng.choice(4, size=2, replace=False).tolist() for _ in "ab"]
    sampler = samplers.make("uniform", num_tasks=4, seed=0)
    assert run["curve"]["tasks"] == [sampler.next(2), sampler.next(2)]


@pytest.mark.slow  # about 4 s: 900 restores, 14k policy turns
def test_mc_reference_agrees_with_exact_on_keyrooms():
    """MC A^pi (K = 16) against the exact A^pi of the same policy on sampled states. The exact
    values ignore the step limit, so the env gets one (200) that discounting makes irrelevant;
    with the default 20 the two references differ late in episodes (r about 0.4 here)."""
    bench = _script()
    kwargs = {"level": "small", "max_steps": 200}
    cfg = BenchmarkConfig(env_kwargs=kwargs, tasks=4, groups=4, group_size=4)
    pool = EnvPool(cfg.env, 16, split="train", env_kwargs=cfg.env_kwargs)
    exact = bench.ExactValues(pool, list(range(4)), cfg.gamma)
    agent = bench.TabularSoftmaxAgent(lr=1.0, seed=0)
    exact.warm_start(agent, exact.calibrate(0.5, 20))
    batch = collect(pool, agent, [0, 1, 2, 3], 4, [1, 2, 3, 4])
    ref = exact.step_advantages(agent, batch.groups, [0, 1, 2, 3])
    mc = mc_reference(
        pool, agent, batch.groups, k=16, n_states=12, gamma=cfg.gamma,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    pool.close()
    on = np.isfinite(mc.values)
    assert on.sum() >= 12 and mc.stats["diverged"] == 0
    assert np.all(mc.se[on] >= 0)
    assert pearson(mc.values, ref) > 0.7
    # Split halves estimate the same quantity; corrected for the MC noise, the exact A^pi taken
    # as a "method" agrees with the MC reference almost perfectly (raw about 0.76, rel 0.53).
    scores = fidelity_scores(batch.groups, ref, mc.values, mc.halves)
    assert 0.2 < scores["reliability"] < 1
    assert scores["pearson"] < scores["pearson_corrected"]
    assert abs(scores["pearson_corrected"] - 1) < 0.15


def test_expert_prior_starts_on_the_expert_action():
    pool = EnvPool("creditgym/KeyRooms-v0", 8, split="train", env_kwargs={"level": "small"})
    success = []
    for beta in (0.0, 2.0, 20.0):
        agent = ExpertPriorTabularAgent(beta, seed=0)
        batch = collect(pool, agent, [0, 1], 4, [5, 6])
        success.append(batch.stats["success"])
        key, (acts, logits) = next(iter(agent.table.items()))
        assert logits.max() == beta and (beta == 0 or np.sum(logits == beta) == 1)
    pool.close()
    assert success[-1] == 1.0 and success[0] <= success[1] <= success[2]
    with pytest.raises(ValueError, match="prior_beta"):
        ExpertPriorTabularAgent(-1.0)


def test_expert_prior_beta_is_bisected_on_seeded_rollouts():
    bench = _script()
    cfg = BenchmarkConfig(env_kwargs={"level": "small"}, prior_success=0.5, prior_episodes=2)
    pool = EnvPool(cfg.env, 4, split="train", env_kwargs=cfg.env_kwargs)
    try:
        cal = bench.calibrate_expert_prior(cfg, pool, [0, 1])
        assert cal["success"] >= 0.5 and cal["episodes"] == 4
        # seeded: the same beta measures the same; it is the smallest up to the resolution
        assert bench.expert_prior_success(cfg, pool, [0, 1], cal["beta"]) == cal["success"]
        lower = bench.expert_prior_success(cfg, pool, [0, 1], cal["beta"] - 2**-10)
    finally:
        pool.close()
    assert lower < 0.5
