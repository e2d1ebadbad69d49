import numpy as np

from creditgym import credit
from creditgym.credit.grpo import episode_advantages
from tests.credit.helpers import group, traj

G95 = 0.95


def two_paths():
    # traj 0: s0 -a-> s1 -b-> win (rewards 0, 10)
    # traj 1: s0 -c-> s1 -d-> s2 -e-> lose (rewards 0, 0, 0)
    return group(
        traj([("s0", "a", 0), ("s1", "b", 10)], end="goal"),
        traj([("s0", "c", 0), ("s1", "d", 0), ("s2", "e", 0)], end="s3"),
    )


def test_gigpo_hand_computed_mean_norm():
    # Step returns (gamma 0.95): traj0 [0.95*10, 10] = [9.5, 10]; traj1 [0, 0, 0].
    # Anchor s0: {9.5, 0} mean 4.75 -> [+4.75, -4.75]; s1: {10, 0} -> [+5, -5]; s2 singleton -> 0.
    # Episode returns [10, 0] -> mean_norm [+5, -5]. A = A^E + 1.0 * A^S.
    adv = credit.make("gigpo", mode="mean_norm")([two_paths()])
    np.testing.assert_allclose(adv.values, [5 + 4.75, 5 + 5, -5 - 4.75, -5 - 5, -5 + 0])
    assert adv.diagnostics["anchor_groups"] == 3
    assert adv.diagnostics["anchor_group_size_mean"] == 5 / 3


def test_gigpo_hand_computed_std_and_omega():
    # Pairs of two values {x, y}: sample std = |x - y| / sqrt(2), so each normalised member is
    # +-(|x-y|/2) / (|x-y|/sqrt(2) + 1e-6) ~= +-0.7071 for every non-singleton anchor group.
    z = lambda d: (d / 2) / (d / np.sqrt(2) + 1e-6)  # noqa: E731
    adv = credit.make("gigpo", omega=0.5)([two_paths()])
    e, s0, s1 = z(10), z(9.5), z(10)
    np.testing.assert_allclose(
        adv.values, [e + 0.5 * s0, e + 0.5 * s1, -e - 0.5 * s0, -e - 0.5 * s1, -e]
    )


def test_revisits_inside_one_trajectory_count_each_time():
    # One trajectory visiting s0 twice: returns r=[0, 0, 10] -> Rhat [9.025, 9.5, 10].
    # Anchor s0 = {t0: 9.025, t1: 9.5}, mean 9.2625 -> [-0.2375, +0.2375]; s1 singleton.
    g = group(traj([("s0", "wait", 0), ("s0", "go", 0), ("s1", "win", 10)]))
    adv = credit.make("gigpo", mode="mean_norm")([g])
    np.testing.assert_allclose(adv.values, [-0.2375, 0.2375, 0.0])


def test_invalid_step_penalty_in_step_returns():
    # traj1 step 1 invalid: r = [0, -0.1, 0] -> Rhat [-0.095, -0.1, 0]; return -0.1.
    # Episode: returns [10, -0.1], mean 4.95 -> [5.05, -5.05].
    # s0: {9.5, -0.095} mean 4.7025 -> [4.7975, -4.7975]; s1: {10, -0.1} -> [5.05, -5.05].
    g = group(
        traj([("s0", "a", 0), ("s1", "b", 10)], end="goal"),
        traj([("s0", "c", 0), ("s1", "d", 0), ("s2", "e", 0)], end="s3", invalid=(1,)),
    )
    adv = credit.make("gigpo", mode="mean_norm")([g])
    np.testing.assert_allclose(
        adv.values, [5.05 + 4.7975, 5.05 + 5.05, -5.05 - 4.7975, -5.05 - 5.05, -5.05 + 0.0]
    )


def test_groups_never_share_anchor_states():
    # The same state key in two different groups must not form one anchor group.
    a = group(traj([("s0", "a", 10)]), task_id="A")
    b = group(traj([("s0", "a", 0)]), task_id="B")
    adv = credit.make("gigpo")([a, b])
    np.testing.assert_allclose(adv.values, [0.0, 0.0])


def test_similarity_anchors_cluster_near_identical_observations():
    g = two_paths()
    texts = ["You see a red box.", "You see a red box!", "Totally different text here."]
    for t in g.trajectories:
        for s in t.steps:
            s.observation = {"s0": texts[0], "s1": texts[1], "s2": texts[2]}[s.state_key]
    # At 0.9, s0 and s1 observations merge: anchor {9.5, 10, 0, 0} (traj0 t0,t1; traj1 t0,t1).
    adv = credit.make("gigpo", mode="mean_norm", similarity=0.9)([g])
    step = adv.values - episode_advantages([g], "mean_norm", "sample", 0.1)
    np.testing.assert_allclose(step, [9.5 - 4.875, 10 - 4.875, -4.875, -4.875, 0.0])
