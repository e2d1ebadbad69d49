import numpy as np
import pytest

from creditgym import credit
from tests.credit.helpers import group, traj


def returns_group(*returns: float, length: int = 2):
    """A group whose trajectory i has `length` steps and return returns[i] (on its last step)."""
    trajs = []
    for i, r in enumerate(returns):
        path = [(f"s{i}_{t}", "a", 0.0) for t in range(length - 1)] + [(f"s{i}_x", "a", r)]
        trajs.append(traj(path))
    return group(*trajs)


def test_grpo_hand_computed_sample_std():
    # Returns [10, 0, 0, 10]: mean 5, sample std sqrt((4 * 5^2) / 3) = sqrt(100/3) = 5.773503.
    adv = credit.make("grpo")([returns_group(10, 0, 0, 10)])
    expected = 5 / (np.sqrt(100 / 3) + 1e-6)
    np.testing.assert_allclose(adv.values, [expected] * 2 + [-expected] * 4 + [expected] * 2)


def test_grpo_population_std_and_mean_norm():
    # Returns [3, 1]: mean 2; population std 1 -> +-1/(1+1e-6); mean_norm -> +-1.
    g = returns_group(3, 1, length=1)
    np.testing.assert_allclose(
        credit.make("grpo", std="population")([g]).values, [1 / (1 + 1e-6), -1 / (1 + 1e-6)]
    )
    np.testing.assert_allclose(credit.make("grpo", mode="mean_norm")([g]).values, [1.0, -1.0])


def test_grpo_per_step_rows_weighs_long_trajectories():
    # Trajectory 0: 3 steps, return 10; trajectory 1: 1 step, return 0. Rows: [10, 10, 10, 0]
    # mean 7.5 -> mean_norm rows [2.5, 2.5, 2.5, -7.5] (instead of [5, 5, 5, -5] per trajectory).
    g = group(traj([("a", "x", 0), ("b", "x", 0), ("c", "x", 10)]), traj([("a", "y", 0)]))
    adv = credit.make("grpo", mode="mean_norm", per_step_rows=True)([g])
    np.testing.assert_allclose(adv.values, [2.5, 2.5, 2.5, -7.5])
    adv = credit.make("grpo", mode="mean_norm")([g])
    np.testing.assert_allclose(adv.values, [5, 5, 5, -5])


def test_invalid_penalty_enters_the_return():
    # Returns: 10 - 0.1 (one invalid step) and 0 -> mean 4.95 -> mean_norm [4.95, 4.95, -4.95].
    g = group(traj([("a", "bad", 0), ("a", "go", 10)], invalid=(0,)), traj([("a", "x", 0)]))
    np.testing.assert_allclose(
        credit.make("grpo", mode="mean_norm")([g]).values, [4.95, 4.95, -4.95]
    )


def test_rloo_hand_computed():
    # Returns [10, 0, 5]: A_0 = 10 - (0+5)/2 = 7.5; A_1 = 0 - 7.5 = -7.5; A_2 = 5 - 5 = 0.
    adv = credit.make("rloo")([returns_group(10, 0, 5, length=1)])
    np.testing.assert_allclose(adv.values, [7.5, -7.5, 0.0])


def test_singleton_and_tied_groups_give_zero():
    for name in ("grpo", "rloo", "gigpo"):
        assert np.all(credit.make(name)([returns_group(10)]).values == 0)
        adv = credit.make(name)([returns_group(10, 10, 10)])
        assert np.all(adv.values == 0)
        assert adv.diagnostics["tied_groups"] == 1


def test_make_rejects_unknown_names_and_options():
    with pytest.raises(KeyError, match="did you mean"):
        credit.make("gipo")
    with pytest.raises(TypeError, match="omega"):
        credit.make("gigpo", omegaa=2.0)
    with pytest.raises(ValueError, match="mode"):
        credit.make("grpo", mode="zscore")
    assert {"grpo", "rloo", "gigpo"} <= set(credit.available())
