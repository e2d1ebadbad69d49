from difflib import SequenceMatcher

import numpy as np

from creditgym import credit
from creditgym.credit.gigpo import reference_similarity_clusters, similarity_clusters
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


def parity_group():
    # T1: s0 -> s1 -> win, rewards (0, 10), step 1 invalid (penalty 0.1), won.
    # T2: s0 -> lose, reward 0, lost.
    return group(
        traj([("s0", "a", 0), ("s1", "b", 10)], end="win", invalid=(1,)),
        traj([("s0", "c", 0)], end="lose"),
    )


def test_verl_agent_parity_options_reproduce_compute_gigpo_outcome_advantage():
    # episode_score="verl_agent": row score = 10 x won - the row's own penalty:
    #   T1 rows [10, 10 - 0.1 = 9.9], T2 row [0].
    # per_step_rows: mean and std over all 3 rows (compute_mean_std_cross_steps):
    #   mean 19.9 / 3; std = torch.std (sample).
    # Step part: r = T1 [0, 9.9], T2 [0]; Rhat (0.95) T1 [9.405, 9.9], T2 [0];
    #   anchor s0 {9.405, 0}: mean 4.7025, sample std 9.405 / sqrt(2); s1 singleton -> 0.
    rows = np.array([10.0, 9.9, 0.0])
    ep = (rows - rows.mean()) / (rows.std(ddof=1) + 1e-6)
    s0 = np.array([9.405, 0.0])
    st = (s0 - s0.mean()) / (s0.std(ddof=1) + 1e-6)
    adv = credit.make("gigpo", per_step_rows=True, episode_score="verl_agent")([parity_group()])
    np.testing.assert_allclose(adv.values, [ep[0] + st[0], ep[1] + 0.0, ep[2] + st[1]])
    # mean_norm: [10 - 6.6333, 9.9 - 6.6333, 0 - 6.6333] + [4.7025, 0, -4.7025].
    m = credit.make("gigpo", per_step_rows=True, episode_score="verl_agent", mode="mean_norm")(
        [parity_group()]
    )
    np.testing.assert_allclose(
        m.values, [10 - 19.9 / 3 + 4.7025, 9.9 - 19.9 / 3, -19.9 / 3 - 4.7025]
    )
    # verl_agent without per_step_rows: statistics over one row per trajectory (its first:
    # [10, 0], mean 5, sample std 7.0711), applied to every row's own score.
    one = credit.make("gigpo", episode_score="verl_agent", mode="mean_norm")([parity_group()])
    np.testing.assert_allclose(one.values, [10 - 5 + 4.7025, 9.9 - 5, 0 - 5 - 4.7025])
    # The defaults stay the paper's: R_i over trajectories. R = [9.9, 0] -> mean_norm [4.95, -4.95].
    d = credit.make("gigpo", mode="mean_norm")([parity_group()])
    np.testing.assert_allclose(d.values, [4.95 + 4.7025, 4.95, -4.95 - 4.7025])


def long_observations():
    """Six ~310-character texts: one base text, each copy with a few words replaced."""
    rng = np.random.default_rng(0)
    words = "the doc search result title text about river city museum found in year".split()  # noqa: SIM905
    base = " ".join(rng.choice(words, 60))
    texts = []
    for _ in range(6):
        w = base.split()
        for _ in range(rng.integers(1, 12)):
            w[rng.integers(len(w))] = rng.choice(words)
        texts.append(" ".join(w))
    return texts


def test_similarity_matches_verl_agent_argument_order_and_autojunk():
    texts = long_observations()
    assert min(len(t) for t in texts) > 200  # long enough for difflib's autojunk to act
    ours = similarity_clusters(texts, 0.9).tolist()
    assert ours == reference_similarity_clusters(texts, 0.9) == [0, 1, 2, 3, 4, 5]
    # The old keying (arguments swapped, autojunk off) put text 2 in text 0's cluster:
    assert SequenceMatcher(None, texts[0], texts[2], autojunk=False).ratio() >= 0.9
    assert SequenceMatcher(None, texts[2], texts[0]).ratio() < 0.9
    # Every threshold gives the reference's clusters.
    for thr in (0.3, 0.5, 0.7, 0.8, 0.95, 1.0):
        assert similarity_clusters(texts * 2, thr).tolist() == reference_similarity_clusters(
            texts * 2, thr
        )
