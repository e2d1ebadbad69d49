import numpy as np
import pytest

from creditgym import credit
from tests.credit.helpers import group, traj


def entropic_group():
    # traj 0: two steps, token entropies with means 1.0 and 3.0, return 10
    # traj 1: one step, mean entropy 2.0, return 0
    t0 = traj([("s0", "a", 0), ("s1", "b", 10)])
    t1 = traj([("s0", "c", 0)])
    t0.steps[0].entropies = np.array([0.5, 1.5])
    t0.steps[1].entropies = np.array([3.0])
    t1.steps[0].entropies = np.array([1.0, 2.0, 3.0])
    return group(t0, t1)


def test_empg_hand_computed_over_grpo():
    # Base GRPO mean_norm: returns [10, 0] -> [5, 5, -5].
    # H = [1, 3, 2]; min-max -> H~ = [0, 1, 0.5]; exp(-H~) = [1, e^-1, e^-0.5];
    # g = exp(-H~) / mean(exp(-H~)). Bonus: T0t0 gets 0.1 * exp(-H~ of T0t1) = 0.1 e^-1;
    # last steps get none.
    # Final advantage normalisation (the paper's Eq. 7): subtract the batch mean of A'.
    e = np.exp([0.0, -1.0, -0.5])
    g = e / e.mean()
    modulated = np.array([g[0] * 5 + 0.1 * np.exp(-1.0), g[1] * 5, g[2] * -5])
    adv = credit.make("empg", base_options={"mode": "mean_norm"})([entropic_group()])
    np.testing.assert_allclose(adv.values, modulated - modulated.mean())
    assert adv.values.mean() == pytest.approx(0.0, abs=1e-12)
    assert adv.diagnostics["recentre_shift"] == pytest.approx(modulated.mean())
    assert adv.diagnostics["entropy_mean"] == pytest.approx(2.0)
    raw = credit.make("empg", recenter=False, base_options={"mode": "mean_norm"})
    np.testing.assert_allclose(raw([entropic_group()]).values, modulated)


def test_empg_composes_with_gigpo():
    grp = entropic_group()
    base = credit.make("gigpo", mode="mean_norm")([grp]).values
    e = np.exp([0.0, -1.0, -0.5])
    g = e / e.mean()
    adv = credit.make("empg", base="gigpo", base_options={"mode": "mean_norm"}, zeta=0.0)([grp])
    np.testing.assert_allclose(adv.values, g * base - (g * base).mean())


def test_flat_entropies_leave_the_base_plus_a_constant_bonus():
    # All H equal -> H~ = 0, g = 1, bonus zeta * e^0 = zeta on every step but the last:
    # A' = [5.2, 5, -5], batch mean 5.2 / 3, subtracted from every step.
    grp = entropic_group()
    for t in grp.trajectories:
        for s in t.steps:
            s.entropies = np.array([0.7])
    adv = credit.make("empg", zeta=0.2, base_options={"mode": "mean_norm"})([grp])
    np.testing.assert_allclose(adv.values, np.array([5.2, 5, -5]) - 5.2 / 3)


def test_empg_needs_entropies_and_its_base_needs():
    assert credit.make("empg").needs == {"entropies"}
    assert credit.make("empg", base="ppo").needs == {"entropies", "values"}
    grp = entropic_group()
    grp.trajectories[1].steps[0].entropies = None
    with pytest.raises(ValueError, match="trajectory 1 step 0"):
        credit.make("empg")([grp])
    with pytest.raises(ValueError, match="itself"):
        credit.make("empg", base="empg")
    with pytest.raises(TypeError, match="no option"):
        credit.make("empg", base="gigpo", base_options={"omegaa": 1.0})
