"""Fidelity and pairwise order count only the steps a method trains on (issue 18): a step with
``Advantages.mask`` False or ``Advantages.weight`` 0 is left out; nothing changes without a mask."""

from __future__ import annotations

import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers.reference import fidelity_scores, pairwise_order, pearson, trained_steps


def _group(trajs: list[list[tuple[str, str]]]) -> TrajectoryGroup:
    g = TrajectoryGroup(task_id="t", seed=0)
    for steps in trajs:
        g.trajectories.append(
            Trajectory(steps=[Step(state_key=s, action=a, reward=0.0) for s, a in steps])
        )
    return g


# flat steps: 0 s/a, 1 s/b, 2 u/a, 3 u/b | 4 s/c, 5 u/a, 6 s/a, 7 u/c
GROUP = _group([[("s", "a"), ("s", "b"), ("u", "a"), ("u", "b")],
                [("s", "c"), ("u", "a"), ("s", "a"), ("u", "c")]])  # fmt: skip
REF = np.array([1.0, 5.0, 2.0, 3.0, -1.0, 2.0, 1.0, -4.0])
# The method equals the reference on every step but 1 (masked, A = 0) and 7 (weight 0, A = 0).
METHOD = np.array([1.0, 0.0, 2.0, 3.0, -1.0, 2.0, 1.0, 0.0])
ADV = Advantages(
    values=METHOD,
    mask=np.array([True, False, True, True, True, True, True, True]),
    weight=np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]),
)


def test_trained_steps_drops_mask_false_and_weight_zero():
    # weight 0.5 (step 6) still trains; mask False (1) and weight 0 (7) do not.
    assert trained_steps(ADV).tolist() == [True, False, True, True, True, True, True, False]
    assert trained_steps(Advantages(values=METHOD)).all()


def test_masked_steps_leave_fidelity_and_pairwise_order():
    on = trained_steps(ADV)
    out = fidelity_scores([GROUP], METHOD, REF, mask=on)
    # Trained steps 0, 2, 3, 4, 5, 6: method == reference there -> r = 1.
    assert out["pearson"] == pytest.approx(1.0) and out["steps"] == 6
    # Pairs among trained steps (same state, different action, reference not tied):
    #   s: (0 a, 4 c) ref 1 - (-1) = 2, (4 c, 6 a) ref -1 - 1 = -2   -> 2 pairs, both agree
    #   u: (2 a, 3 b) ref -1, (3 b, 5 a) ref 1                        -> 2 pairs, both agree
    assert (out["pairwise"], out["pairs"]) == (1.0, 4)
    assert pairwise_order([GROUP], METHOD, REF, mask=on) == (1.0, 4)

    # Counting the masked steps (the old behaviour) scores the mask's zeros:
    #   s adds (0,1) ref -4 vs method 1: wrong; (1,4) ref 6 vs 1: right; (1,6) ref 4 vs -1: wrong
    #   u adds (2,7) ref 6 vs 2, (3,7) ref 7 vs 3, (5,7) ref 6 vs 2: all right -> 8 of 10.
    old = fidelity_scores([GROUP], METHOD, REF)
    assert (old["pairwise"], old["pairs"]) == (pytest.approx(0.8), 10) and old["steps"] == 8
    assert old["pearson"] == pytest.approx(pearson(METHOD, REF)) and old["pearson"] < 0.7


def test_split_half_reliability_uses_the_same_steps():
    on = trained_steps(ADV)
    h1 = REF.copy()
    h2 = REF.copy()
    h2[[1, 7]] = [-50.0, 60.0]  # the halves disagree only on the untrained steps
    out = fidelity_scores([GROUP], METHOD, REF, (h1, h2), mask=on)
    assert out["reliability"] == pytest.approx(1.0)
    assert out["pearson_corrected"] == pytest.approx(out["pearson"])
    assert fidelity_scores([GROUP], METHOD, REF, (h1, h2))["reliability"] < 0.5


def test_without_masks_the_scores_are_unchanged():
    rng = np.random.default_rng(7)
    states, actions = "pqr", "abc"
    trajs = [
        [
            (states[rng.integers(3)], actions[rng.integers(3)])
            for _ in range(int(rng.integers(3, 8)))
        ]
        for _ in range(6)
    ]
    g = _group(trajs)
    n = sum(len(t) for t in trajs)
    method, ref = rng.normal(size=n), rng.normal(size=n)
    ref[rng.random(n) < 0.3] = np.nan  # a reference on some steps only, as the MC one
    halves = (ref + rng.normal(size=n), ref + rng.normal(size=n))
    on = trained_steps(Advantages(values=method))  # no mask, no weight: every step
    before = fidelity_scores([g], method, ref, halves)
    after = fidelity_scores([g], method, ref, halves, mask=on)
    assert before["pairs"] > 0 and before["pearson"] is not None
    assert after == before
    # A weight that is nowhere 0 is no mask either.
    weighted = Advantages(values=method, weight=np.full(n, 2.0))
    assert fidelity_scores([g], method, ref, halves, mask=trained_steps(weighted)) == before


def test_r3l_masked_prefix_is_not_scored():
    # R^3L's hand group (tests/credit/test_branching_credit.py): steps 3, 4 (base 1) and 12, 13
    # (its retry) are the masked shared prefix.
    trajs = []
    for i, r in enumerate((0.0, 0.0, 10.0, 0.0)):
        steps = [
            Step(state_key=f"b{i}{t}", action="a", reward=r if t == 2 else 0.0) for t in range(3)
        ]
        trajs.append(Trajectory(steps=steps, won=r > 0, role="base", pair_id=f"p{i}"))
    steps = [Step(state_key=f"r{t}", action="a", reward=10.0 if t == 2 else 0.0) for t in range(3)]
    trajs.append(Trajectory(steps=steps, won=True, role="retry", pivot=2, pair_id="p1"))
    g = TrajectoryGroup(trajectories=trajs)
    adv = credit.make("r3l")([g])
    on = trained_steps(adv)
    assert np.flatnonzero(~on).tolist() == [3, 4, 12, 13]
    ref = np.linspace(-1.0, 1.0, 15) + adv.values
    out = fidelity_scores([g], adv.values, ref, mask=on)
    assert out["steps"] == 11
    assert out["pearson"] == pytest.approx(pearson(adv.values[on], ref[on]))
    assert out["pearson"] != pytest.approx(pearson(adv.values, ref))


def test_a_mask_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="mask has shape"):
        fidelity_scores([GROUP], METHOD, REF, mask=np.ones(3, dtype=bool))
