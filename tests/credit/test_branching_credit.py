"""Hand-computed tests of the branching credit modules (issue 18): SPO-chain, SPO-tree,
Tree-GRPO and R^3L, starting from ALGORITHMS-2.md's hand tests (arithmetic in the comments)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from creditgym import credit
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from tests.credit.helpers import group, traj
from tests.credit.test_properties import group_st
from tests.credit.test_properties_all import build


def _steps(n: int, prefix: str = "s", reward_last: float = 0.0) -> list[Step]:
    return [
        Step(state_key=f"{prefix}{t}", action="a", reward=reward_last if t == n - 1 else 0.0)
        for t in range(n)
    ]


# ---------------------------------------------------------------------------- SPO-chain
def test_spo_chain_hand_example_one_turn_segments():
    # V(s0)=0.5 (v0="mc"), V(s1)=0.75, V(s2)=0.25, R=0, V(terminal)=0:
    # A0 = 0 + 0.75 - 0.5 = 0.25; A1 = 0.25 - 0.75 = -0.5; A2 = 0 + 0 - 0.25 = -0.25.
    steps = _steps(3)
    for s, v in zip(steps, (0.5, 0.75, 0.25)):
        s.mc_value = v
    g = TrajectoryGroup(trajectories=[Trajectory(steps=steps)])
    adv = credit.make("spo_chain", v0="mc", whiten=False)([g])
    np.testing.assert_allclose(adv.values, [0.25, -0.5, -0.25])


def test_spo_chain_two_turn_segment_sums_its_rewards_and_group_loo_v0():
    # Trajectory 0: 4 steps, boundary at t=2 (V=4), rewards [0, 1, 0, 10] -> R = 11.
    # Trajectory 1: 1 step, reward 3 -> R = 3. v0=group_loo: V0(traj 0) = 3, V0(traj 1) = 11.
    # traj 0: seg 0 = t0..1: 0 + 1 + 4 - 3 = 2; seg 1 = t2..3: 0 + 10 + 0 - 4 = 6.
    # traj 1: seg 0 = t0: 3 + 0 - 11 = -8.
    a = [Step(state_key=f"x{t}", action="a", reward=r) for t, r in enumerate([0, 1, 0, 10])]
    a[2].mc_value = 4.0
    b = [Step(state_key="x0", action="b", reward=3.0)]
    g = TrajectoryGroup(trajectories=[Trajectory(steps=a), Trajectory(steps=b)])
    adv = credit.make("spo_chain", whiten=False)([g])
    np.testing.assert_allclose(adv.values, [2, 2, 6, 6, -8])
    # v0="ref" without a recorded V(s0): the first segment gets 0.
    ref = credit.make("spo_chain", v0="ref", whiten=False)([g])
    np.testing.assert_allclose(ref.values, [0, 0, 6, 6, 0])
    with pytest.raises(ValueError, match="mc_value on step 0"):
        credit.make("spo_chain", v0="mc")([g])


def test_spo_chain_prob_mask_counts_tokens_and_whitens_over_them():
    # Step A: p = [0.5, 0.95] -> 1 counted token; step B: p = [0.2, 0.3] -> 2; step C: p = [0.99]
    # -> 0 counted (masked). Raw A (one segment each, v0 = group_loo):
    #   traj 0 (A, B; R = 1): v0 = mean(R of the others) = 0 -> A = 1 on both steps.
    #   traj 1 (C; R = 0): v0 = 1 -> A = -1.
    # Whitening over counted tokens: values [1, 1, 1] (A once, B twice), C excluded: mean 1,
    # var 0 -> (1 - 1) / sqrt(0 + 1e-8) = 0 on A and B; C masked with 0.
    def st(p, r=0.0):
        return Step(state_key="s", action="a", reward=r, sampler_logprobs=list(np.log(p)))

    t0 = Trajectory(steps=[st([0.5, 0.95]), st([0.2, 0.3], 1.0)])
    t1 = Trajectory(steps=[st([0.99])])
    g = TrajectoryGroup(trajectories=[t0, t1])
    adv = credit.make("spo_chain")([g])
    np.testing.assert_allclose(adv.values, [0, 0, 0], atol=1e-9)
    assert adv.mask.tolist() == [True, True, False]
    # Without the mask: tokens of A, B, C count 2, 2, 1 with values 1, 1, -1: mean 0.6,
    # unbiased var = (4 x 0.16 + 2.56) / 4 = 0.8 -> (1 - 0.6)/sqrt(0.8) = 0.4472, -1.7889.
    off = credit.make("spo_chain", prob_mask=None)([g])
    np.testing.assert_allclose(off.values, [0.4472136, 0.4472136, -1.7888544], atol=1e-6)
    assert off.mask is None


# ---------------------------------------------------------------------------- SPO-tree
def _tree_2_2() -> TrajectoryGroup:
    """Root -> a, b; a -> a1 (R=1), a2 (R=0); b -> b1 (0), b2 (0). Leaves are 2-step
    trajectories whose first step is the shared node a or b (copied, same node id)."""
    trajs = []
    for top, leaves in (("a", (1.0, 0.0)), ("b", (0.0, 0.0))):
        for j, r in enumerate(leaves):
            leaf = f"{top}{j + 1}"
            s0 = Step(state_key="root", action=top, reward=0.0, node_id=top)
            s1 = Step(state_key=top, action=leaf, reward=r, node_id=leaf, parent_node_id=top)
            trajs.append(Trajectory(steps=[s0, s1], tree_id="T", won=r > 0))
    return TrajectoryGroup(trajectories=trajs, task_id="t")


def test_spo_tree_hand_example_2_2():
    # V(a) = mean(1, 0) = 0.5, V(b) = 0, V(root) = 0.25. A(a) = +0.25, A(b) = -0.25,
    # A(a1) = +0.5, A(a2) = -0.5, A(b1) = A(b2) = 0 (dropped). Shared nodes trained once.
    g = _tree_2_2()
    adv = credit.make("spo_tree", whiten=False)([g])
    # Flat order: a1 leaf (a, a1), a2 leaf (a, a2), b1 leaf (b, b1), b2 leaf (b, b2).
    np.testing.assert_allclose(adv.values, [0.25, 0.5, 0.0, -0.5, -0.25, 0.0, 0.0, 0.0])
    assert adv.mask.tolist() == [True, True, False, True, True, False, False, False]


def test_spo_tree_grpo_style_divides_by_the_parents_children_std():
    # Root's children V = [0.5, 0]: population std 0.25 -> A(a) = 0.25 / 0.25 = 1, A(b) = -1.
    # a's children [1, 0]: std 0.5 -> A(a1) = 0.5 / 0.5 = 1, A(a2) = -1.
    adv = credit.make("spo_tree", adv_method="grpo", whiten=False)([_tree_2_2()])
    np.testing.assert_allclose(adv.values[[0, 1, 3, 4]], [1, 1, -1, -1], atol=1e-6)


def test_spo_tree_whitens_over_trained_steps_and_respects_edge_selection():
    # Trained values [0.25, 0.5, -0.5, -0.25]: mean 0, unbiased var = (2 x 0.0625 + 2 x 0.25) / 3
    # = 0.2083 -> 0.25 / 0.45644 = 0.5477, 0.5 / 0.45644 = 1.0954.
    adv = credit.make("spo_tree")([_tree_2_2()])
    np.testing.assert_allclose(
        adv.values[[0, 1, 3, 4]], [0.5477, 1.0954, -1.0954, -0.5477], atol=1e-4
    )
    g = _tree_2_2()
    g.trajectories[0].steps[1].extras["edge_selected"] = False  # the buffer keeps a1 for later
    sel = credit.make("spo_tree", whiten=False)([g])
    assert sel.mask.tolist() == [True, False, False, True, True, False, False, False]


def test_spo_tree_without_node_ids_uses_the_trie():
    # Same tree spelled by plain trajectories: the trie of (state, action) prefixes.
    g = group(
        traj([("root", "a", 0), ("a", "a1", 1)]),
        traj([("root", "a", 0), ("a", "a2", 0)]),
        traj([("root", "b", 0), ("b", "b1", 0)]),
        traj([("root", "b", 0), ("b", "b2", 0)]),
    )
    adv = credit.make("spo_tree", whiten=False, only_nonzero=False)([g])
    # Every copy is a separate visit of the trie node (no recorded ids): all kept.
    np.testing.assert_allclose(adv.values, [0.25, 0.5, 0.25, -0.5, -0.25, 0, -0.25, 0])
    assert adv.mask.all()


# ---------------------------------------------------------------------------- Tree-GRPO
def test_tree_grpo_hand_example_two_trees():
    # Leaves R = [1, 0, 0] (tree 1) and [1, 1, 0] (tree 2); sample std.
    # inter: mean 0.5, std sqrt(6 x 0.25 / 5) = 0.5477 -> +-0.5 / 0.5477 = +-0.9129.
    # intra 1: mean 1/3, std sqrt((4/9 + 2/9) / 2) = 0.5774 -> [1.1547, -0.5774, -0.5774];
    # intra 2: mean 2/3 -> [0.5774, 0.5774, -1.1547].
    leaves = []
    for tree, rs in (("T1", (1, 0, 0)), ("T2", (1, 1, 0))):
        for r in rs:
            leaves.append(Trajectory(steps=_steps(1, reward_last=float(r)), tree_id=tree))
    g = TrajectoryGroup(trajectories=leaves)
    adv = credit.make("tree_grpo")([g])
    np.testing.assert_allclose(
        adv.values, [2.0676, -1.4903, -1.4903, 1.4903, 1.4903, -2.0676], atol=1e-4
    )
    inner = credit.make("tree_grpo", variant="tree_inner")([g])
    np.testing.assert_allclose(
        inner.values, [1.1547, -0.5774, -0.5774, 0.5774, 0.5774, -1.1547], atol=1e-4
    )


def test_tree_grpo_shared_prefix_mean_trains_each_node_once_with_its_leaf_count():
    # Tree 2-2 as above (one tree): leaves R = [1, 0, 0, 0], mean 0.25, sample std 0.5;
    # intra = inter = [1.5, -0.5, -0.5, -0.5] -> A = [3, -1, -1, -1].
    # "mean": node a holds leaves a1, a2 -> mean(3, -1) = 1, weight 2; node b -> -1, weight 2.
    g = _tree_2_2()
    dup = credit.make("tree_grpo")([g])
    np.testing.assert_allclose(dup.values, [3, 3, -1, -1, -1, -1, -1, -1], atol=1e-5)
    mean = credit.make("tree_grpo", shared_prefix="mean")([g])
    np.testing.assert_allclose(mean.values, [1, 3, 1, -1, -1, -1, -1, -1], atol=1e-5)
    assert mean.mask.tolist() == [True, True, False, True, True, True, False, True]
    assert mean.weight.tolist() == [2, 1, 2, 1, 2, 1, 2, 1]


# ---------------------------------------------------------------------------- R^3L
def _r3l_group() -> TrajectoryGroup:
    """r~ = [0, 0, 1, 0 | retry of base 1: 1], pivot k = 2 (R_max = 10; 3-step trajectories)."""
    trajs = []
    for i, r in enumerate((0.0, 0.0, 10.0, 0.0)):
        trajs.append(
            Trajectory(steps=_steps(3, f"b{i}", r), won=r > 0, role="base", pair_id=f"p{i}")
        )
    trajs.append(
        Trajectory(steps=_steps(3, "r", 10.0), won=True, role="retry", pivot=2, pair_id="p1")
    )
    return TrajectoryGroup(trajectories=trajs)


def test_r3l_hand_example_paper_and_code():
    # mean r~ = 2/5 = 0.4; s = [-0.4, -0.4, 0.6, -0.4, 0.6]; won -> alpha = 3 (paper) / 1 (code).
    g = _r3l_group()
    adv = credit.make("r3l")([g])
    per = [adv.values[3 * i] for i in range(5)]
    np.testing.assert_allclose(per, [-0.4, -0.4, 3, -0.4, 3])
    code = credit.make("r3l", max_reward_adv=1.0)([g])
    np.testing.assert_allclose([code.values[3 * i] for i in range(5)], [-0.4, -0.4, 1, -0.4, 1])
    # Turns 0-1 of base 1 (steps 3, 4) and of its retry (steps 12, 13) are masked.
    masked = [i for i, m in enumerate(adv.mask) if not m]
    assert masked == [3, 4, 12, 13]


def test_r3l_amplifies_positive_scores_and_gives_sft_samples_one():
    # Returns [5, 0] of R_max 10, neither won: r~ = [0.5, 0], mean 0.25, s = [0.25, -0.25]
    # -> A = [3 x 0.25, -0.25] = [0.75, -0.25]; a reflection sample alone gets A = 1.
    g = TrajectoryGroup(
        trajectories=[
            Trajectory(steps=_steps(1, "x", 5.0)),
            Trajectory(steps=_steps(1, "y", 0.0)),
            Trajectory(steps=_steps(1, "z", 0.0), role="reflection"),
            Trajectory(steps=_steps(1, "m", 0.0), role="mc"),
        ]
    )
    adv = credit.make("r3l")([g])
    np.testing.assert_allclose(adv.values, [0.75, -0.25, 1.0, 0.0])
    assert adv.mask.tolist() == [True, True, True, False]


def test_r3l_rejects_bad_options_and_roles():
    with pytest.raises(ValueError, match="max_reward_adv"):
        credit.make("r3l", max_reward_adv="code")
    g = TrajectoryGroup(trajectories=[Trajectory(steps=_steps(1), role="weird")])
    with pytest.raises(ValueError, match="role 'weird'"):
        credit.make("r3l")([g])


# ---------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(spec=group_st)
def test_reductions_on_plain_groups(spec):
    """On a plain group (no tree ids, no boundaries, no retries): Tree-GRPO is GRPO over the
    inter term; SPO-chain is RLOO-style return minus the others' mean; R^3L is amplified
    centred returns."""
    g = build(spec, distinct=True)
    np.testing.assert_allclose(
        credit.make("tree_grpo")([g]).values, credit.make("grpo")([g]).values, atol=1e-9
    )
    chain = credit.make("spo_chain", whiten=False)([g]).values
    returns = np.array([t.episode_return() for t in g.trajectories])
    n = len(returns)
    exp = [(r - (returns.sum() - r) / (n - 1)) if n > 1 else 0.0 for r in returns]
    np.testing.assert_allclose(chain, np.repeat(exp, [len(t) for t in g.trajectories]), atol=1e-9)
    r3l = credit.make("r3l")([g]).values
    assert np.all(np.isfinite(r3l))


@settings(max_examples=40, deadline=None)
@given(spec=group_st)
def test_spo_tree_on_distinct_paths_is_return_minus_mean_then_zero(spec):
    # No state is shared: the trie is G chains under the root, so V(node) = R_i on every node
    # of trajectory i and V(root) = mean_j R_j: A = R_i - mean R on step 0, then 0.
    g = build(spec, distinct=True)
    adv = credit.make("spo_tree", whiten=False, only_nonzero=False)([g]).values
    returns = np.array([t.episode_return() for t in g.trajectories])
    expected = []
    for r, t in zip(returns, g.trajectories):
        expected += [r - returns.mean()] + [0.0] * (len(t) - 1)
    np.testing.assert_allclose(adv, expected, atol=1e-9)


def test_branching_fields_round_trip_through_the_dump(tmp_path):
    import json

    from creditgym.trainers.dump import load_dump, trajectory_rows

    g = _r3l_group()
    g.trajectories[0].steps[1].mc_value = 0.5
    g.trajectories[0].steps[0].node_id, g.trajectories[0].tree_id = "n0", "T"
    g.trajectories[0].steps[1].parent_node_id = "n0"
    adv = credit.make("r3l")([g])
    rows = trajectory_rows(1, [g], adv)
    assert "role" not in rows[0] and rows[0]["node_id"] == "n0" and rows[12]["role"] == "retry"
    path = tmp_path / "iter.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (back,) = load_dump(path)
    t0, retry = back.trajectories[0], back.trajectories[4]
    assert (t0.tree_id, t0.steps[0].node_id, t0.steps[1].parent_node_id) == ("T", "n0", "n0")
    assert t0.steps[1].mc_value == 0.5 and t0.role == "base"
    assert (retry.role, retry.pivot, retry.pair_id) == ("retry", 2, "p1")
    np.testing.assert_array_equal(credit.make("r3l")([back]).values, adv.values)
