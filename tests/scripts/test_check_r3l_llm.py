"""scripts/check_r3l_llm.py's batch checks on a real retry batch (KeyRooms small, tabular agent
with an expert prior, expert reflector): they pass on what the strategy and r3l produce and catch a wrong mask or a
retry that does not start from its base's prefix."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np

from creditgym import credit
from creditgym.agents.expert_prior import ExpertPriorTabularAgent
from creditgym.trainers import strategies
from creditgym.trainers.rollout import EnvPool

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("_r3l", ROOT / "scripts/check_r3l_llm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _batch():
    pool = EnvPool("creditgym/KeyRooms-v0", 8, env_kwargs={"level": "small"})
    try:
        batch = strategies.make("retry").collect(
            pool, ExpertPriorTabularAgent(prior_beta=1.5, seed=0), [0, 1, 2, 3], 4, [0, 1, 2, 3]
        )
    finally:
        pool.close()
    return batch.groups


def test_the_checks_pass_on_a_real_retry_batch_and_catch_a_wrong_mask():
    check = _script()
    groups = _batch()
    adv = credit.make("r3l")(groups)
    figures = check.check_batch(None, groups, adv, reflections=False)
    assert figures["failures"] == []
    assert figures["retries"] > 0 and figures["masked_steps"] > 0
    # masked steps: each retry's first k steps, its base's first k (one retry per base) and a
    # won retry's guided copy's first k
    trajs = [t for g in groups for t in g.trajectories]
    retried = sum(t.pivot for t in trajs if t.role == "retry")
    guided = sum(t.pivot for t in trajs if t.role == "retry_guided")
    assert figures["masked_steps"] == 2 * retried + guided

    wrong = dataclasses.replace(adv, mask=~adv.step_mask())
    failures = check.check_batch(None, groups, wrong, reflections=False)["failures"]
    assert any("differs from R^3L's pivotal mask" in f for f in failures)
    unmasked = dataclasses.replace(adv, mask=None)
    assert check.check_batch(None, groups, unmasked, reflections=False)["failures"]


def test_a_retry_that_leaves_its_base_elsewhere_is_caught():
    check = _script()
    groups = _batch()
    retry = next(t for g in groups for t in g.trajectories if t.role == "retry" and t.pivot > 0)
    retry.pivot += 1  # claims one more shared step than it has: step k's action differs
    adv = credit.make("r3l")(groups)
    failures = check.check_batch(None, groups, adv, reflections=False)["failures"]
    assert any(f.startswith(f"retry {retry.pair_id} pivot {retry.pivot}") for f in failures)
    # and the LLM path's one-reflection-per-base rule is enforced when asked for
    assert any("reflections" in f for f in check.check_batch(None, groups, adv)["failures"])


def test_expected_mask_by_hand():
    check = _script()
    from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup

    def traj(n, **kw):
        return Trajectory(steps=[Step(state_key="s", action="a", reward=0.0)] * n, **kw)

    g = TrajectoryGroup(
        trajectories=[
            traj(3, role="base", pair_id="p"),
            traj(2, role="base", pair_id="q"),
            traj(4, role="retry", pair_id="p", pivot=2),
            traj(1, role="reflection", pair_id="p"),
        ]
    )
    # base p: first 2 masked; base q: none; retry: first 2; reflection: none
    want = [False, False, True, True, True, False, False, True, True, True]
    assert check.expected_mask([g]).tolist() == want
    assert np.array_equal(credit.make("r3l")([g]).step_mask(), check.expected_mask([g]))
