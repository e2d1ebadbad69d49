import numpy as np
import pytest

from creditgym import credit
from tests.credit.helpers import group, traj


def three_paths():
    # traj 0: s0 -a-> s1 -b-> goal, rewards (0, 10): Rhat (gamma 0.95) = [9.5, 10]
    # traj 1: s0 -c-> s1 -d-> s2 -e-> end, rewards 0: Rhat = [0, 0, 0]
    # traj 2: s2 -f-> s1 -g-> end, rewards 0: Rhat = [0, 0]
    return group(
        traj([("s0", "a", 0), ("s1", "b", 10)], end="goal"),
        traj([("s0", "c", 0), ("s1", "d", 0), ("s2", "e", 0)]),
        traj([("s2", "f", 0), ("s1", "g", 0)]),
    )


def test_hgpo_hand_computed_two_levels_mean_norm():
    # Level 1 (anchor state): s0 {9.5, 0} mean 4.75 -> T0t0 +4.75, T1t0 -4.75;
    #   s1 {10, 0, 0} mean 10/3 -> T0t1 +20/3, T1t1 -10/3, T2t1 -10/3; s2 {0, 0} -> 0, 0.
    # Level 2 (last two states): (s0, s1) {T0t1 10, T1t1 0} mean 5 -> +5, -5;
    #   (s1, s2) and (s2, s1) are singletons -> 0; t = 0 steps have no level 2.
    # Weights (k + 1)^1 over the non-zero items: level 1 -> 2, level 2 -> 3.
    #   T0t1 = (2 * 20/3 + 3 * 5) / 5 = 17/3;  T1t1 = (2 * -10/3 + 3 * -5) / 5 = -13/3;
    #   T1t2: a1 = 0 and a2 = 0 -> 0;  T2t0: a1 = 0 -> 0;  T2t1: only a1 = -10/3 is kept.
    adv = credit.make("hgpo", history=1, mode="mean_norm")([three_paths()])
    np.testing.assert_allclose(adv.values, [4.75, 17 / 3, -4.75, -13 / 3, 0, 0, -10 / 3])
    # Level-1 groups: s0 (2), s1 (3), s2 (2) -> per-step sizes [2,3,2,3,2,2,3], mean 17/7.
    assert adv.diagnostics["level1_group_size_mean"] == pytest.approx(17 / 7)
    assert adv.diagnostics["level2_nonsingleton_frac"] == pytest.approx(2 / 7)


def test_hgpo_alpha_zero_averages_the_kept_levels():
    # alpha = 0: equal weights. T0t1 = (20/3 + 5) / 2 = 35/6; T1t1 = (-10/3 - 5) / 2 = -25/6.
    adv = credit.make("hgpo", history=1, alpha=0.0, mode="mean_norm")([three_paths()])
    np.testing.assert_allclose(adv.values, [4.75, 35 / 6, -4.75, -25 / 6, 0, 0, -10 / 3])


def test_hgpo_base_group_adds_the_episode_level_with_weight_one():
    # Episode returns [10, 0, 0], mean_norm -> [20/3, -10/3, -10/3], item k = 0, weight 1^1 = 1.
    #   T0t0 = (1 * 20/3 + 2 * 4.75) / 3;  T0t1 = (20/3 + 2 * 20/3 + 3 * 5) / 6;
    #   T1t2: episode -10/3 is the only non-zero item -> -10/3;  T2t0 likewise -10/3;
    #   T2t1 = (-10/3 + 2 * -10/3) / 3 = -10/3.
    adv = credit.make("hgpo", history=1, mode="mean_norm", base_group=True)([three_paths()])
    expected = [
        (20 / 3 + 2 * 4.75) / 3,
        (20 / 3 + 2 * 20 / 3 + 3 * 5) / 6,
        (-10 / 3 + 2 * -4.75) / 3,
        (-10 / 3 + 2 * -10 / 3 + 3 * -5) / 6,
        -10 / 3,
        -10 / 3,
        -10 / 3,
    ]
    np.testing.assert_allclose(adv.values, expected)


def test_hgpo_default_std_is_population():
    # Two members {x, y}: population std = |x - y| / 2, so each is +-(d/2) / (d/2 + 1e-6).
    g = group(traj([("s0", "a", 10)]), traj([("s0", "b", 0)]))
    adv = credit.make("hgpo")([g])
    z = 5 / (5 + 1e-6)
    np.testing.assert_allclose(adv.values, [z, -z])


def test_hgpo_deeper_context_separates_what_the_anchor_merges():
    # Both trajectories reach s1, via different states; level 2 splits them into singletons,
    # so only level 1 contributes and the result equals K = 0.
    g = group(
        traj([("s0", "a", 0), ("s1", "b", 10)]),
        traj([("s2", "a", 0), ("s1", "b", 0)]),
    )
    deep = credit.make("hgpo", history=3, mode="mean_norm")([g])
    flat = credit.make("hgpo", history=0, mode="mean_norm")([g])
    np.testing.assert_allclose(deep.values, flat.values)
    np.testing.assert_allclose(deep.values, [0, 5, 0, -5])


def test_hgpo_options_are_checked():
    with pytest.raises(ValueError, match="history"):
        credit.make("hgpo", history=-1)
    with pytest.raises(ValueError, match="mode"):
        credit.make("hgpo", mode="zscore")
    with pytest.raises(TypeError, match="did you mean"):
        credit.make("hgpo", histroy=2)


def test_hgpo_base_group_uses_the_unbiased_std():
    # mean_std_norm: the levels divide by the population std, the base item (k = 0) by the
    # sample std as the reference's trajectory term. Episode returns [10, 0, 0]: mean 10/3,
    # sample std = sqrt(((20/3)^2 + 2 (10/3)^2) / 2) = sqrt(100/3) = 5.7735 (population: 4.714).
    g = three_paths()
    with_base = credit.make("hgpo", history=1, base_group=True)([g]).values
    levels = credit.make("hgpo", history=1)([g])
    base = np.array([20 / 3, -10 / 3, -10 / 3]) / (np.sqrt(100 / 3) + 1e-6)
    # T1t2 and T2t0 sit in s2 with Rhat 0 each (a tied anchor group, a_1 = 0) and their level-2
    # items are singletons (0): only the base item is left, so A is the base item itself.
    assert levels.values[4] == 0.0 and levels.values[5] == 0.0
    assert with_base[4] == pytest.approx(base[1])
    assert with_base[5] == pytest.approx(base[2])
    assert base[1] == pytest.approx(-0.57735, abs=1e-5)  # population std would give -0.7071
