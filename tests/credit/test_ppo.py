import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.ppo import gae
from tests.credit.helpers import group, traj


def with_values(t, vs, head="v"):
    for s, v in zip(t.steps, vs):
        s.values = {head: v}
    return t


def test_gae_hand_computed():
    # r = [0, 0, 10], V = [1, 2, 5], V_T = 0, gamma = 1, lambda = 0.5.
    # delta = [0 + 2 - 1, 0 + 5 - 2, 10 + 0 - 5] = [1, 3, 5]
    # A_2 = 5; A_1 = 3 + 0.5 * 5 = 5.5; A_0 = 1 + 0.5 * 5.5 = 3.75
    a = gae(np.array([0, 0, 10.0]), np.array([1, 2, 5.0]), np.array([2, 5, 0.0]), 1.0, 0.5)
    np.testing.assert_allclose(a, [3.75, 5.5, 5])


def test_ppo_module_advantages_and_value_targets():
    t = with_values(traj([("s0", "a", 0), ("s1", "b", 0), ("s2", "c", 10)]), [1, 2, 5])
    adv = credit.make("ppo", lam=0.5, whiten=False)([group(t)])
    np.testing.assert_allclose(adv.values, [3.75, 5.5, 5])
    # target = A + V = [4.75, 7.5, 10]
    np.testing.assert_allclose(adv.targets["v"], [4.75, 7.5, 10])


def test_ppo_lambda_one_is_monte_carlo_minus_value():
    # gamma 0.9, lambda 1: returns [8.1, 9, 10] - V [1, 2, 5] = [7.1, 7, 5]; step 1 invalid
    # lowers r_1 by 0.1: returns [8.1 - 0.09, 9 - 0.1, 10] -> [7.01, 6.9, 5].
    t = with_values(
        traj([("s0", "a", 0), ("s1", "b", 0), ("s2", "c", 10)], invalid=(1,)), [1, 2, 5]
    )
    adv = credit.make("ppo", gamma=0.9, lam=1.0, whiten=False)([group(t)])
    np.testing.assert_allclose(adv.values, [7.01, 6.9, 5])


def test_ppo_whitens_over_the_batch():
    t = with_values(traj([("s0", "a", 0), ("s1", "b", 0), ("s2", "c", 10)]), [1, 2, 5])
    raw = np.array([3.75, 5.5, 5])
    adv = credit.make("ppo", lam=0.5)([group(t)])
    np.testing.assert_allclose(adv.values, (raw - raw.mean()) / (raw.std() + 1e-6))
    assert credit.make("ppo").needs == {"values"}


def test_ppo_missing_values_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Step.values\['v'\]"):
        credit.make("ppo")([group(traj([("s0", "a", 1)]))])
