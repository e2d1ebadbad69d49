import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.salt import step_nodes
from tests.credit.helpers import group, traj


def merging_paths():
    # traj 0: s0 -a-> s1 -b-> win (R = 10)
    # traj 1: s0 -c-> s1 -b-> s2 -e-> lose (R = 0)
    # traj 2: s0 -c-> s2 -e-> lose (R = 0)
    return group(
        traj([("s0", "a", 0), ("s1", "b", 10)]),
        traj([("s0", "c", 0), ("s1", "b", 0), ("s2", "e", 0)]),
        traj([("s0", "c", 0), ("s2", "e", 0)]),
    )


def test_salt_edge_nodes_grpo_base_hand_computed():
    # GRPO base (mean_norm): returns [10, 0, 0], mean 10/3 -> A = [20/3, -10/3, -10/3].
    # Nodes (state, action): (s0,a) {0} -> 20/3; (s1,b) {0,1} -> (20/3 - 10/3)/2 = 5/3;
    #   (s0,c) {1,2} -> -10/3; (s2,e) {1,2} -> -10/3.
    adv = credit.make("salt", mode="mean_norm")([merging_paths()])
    np.testing.assert_allclose(
        adv.values, [20 / 3, 5 / 3, -10 / 3, 5 / 3, -10 / 3, -10 / 3, -10 / 3]
    )
    assert adv.diagnostics["nodes"] == 4
    # Node multiplicities per step [1, 2, 2, 2, 2, 2, 2]: mean 13/7; all but T0t0 shared.
    assert adv.diagnostics["node_multiplicity_mean"] == pytest.approx(13 / 7)
    assert adv.diagnostics["shared_step_frac"] == pytest.approx(6 / 7)
    # (s1,b) mixes a winner and a loser: steps T0t1 and T1t1.
    assert adv.diagnostics["mixed_step_frac"] == pytest.approx(2 / 7)


def test_salt_rloo_base():
    # RLOO: A_i = R_i - mean of the others = [10 - 0, 0 - 5, 0 - 5] = [10, -5, -5].
    # (s0,a) -> 10; (s1,b) {0,1} -> 2.5; (s0,c), (s2,e) {1,2} -> -5.
    adv = credit.make("salt", base="rloo")([merging_paths()])
    np.testing.assert_allclose(adv.values, [10, 2.5, -5, 2.5, -5, -5, -5])


def test_salt_prefix_key_separates_steps_with_different_histories():
    # Prefix nodes: (s0,a) {0}; (s0,a,s1,b) {0}; (s0,c) {1,2}; (s0,c,s1,b) {1};
    #   (s0,c,s1,b,s2,e) {1}; (s0,c,s2,e) {2}. Only (s0,c) is shared, by two losers.
    adv = credit.make("salt", key="prefix", mode="mean_norm")([merging_paths()])
    np.testing.assert_allclose(adv.values, [20 / 3, 20 / 3] + [-10 / 3] * 5)


def test_salt_counts_a_trajectory_once_per_node():
    # traj 0 takes (s0, a) twice and wins; traj 1 takes it once and loses. mean_norm A = [5, -5].
    # traj(s0, a) = {0, 1} -> (5 - 5) / 2 = 0 (counting visits would give (5 + 5 - 5) / 3).
    g = group(
        traj([("s0", "a", 0), ("s0", "a", 0), ("s1", "b", 10)]),
        traj([("s0", "a", 0), ("s1", "c", 0)]),
    )
    adv = credit.make("salt", mode="mean_norm")([g])
    np.testing.assert_allclose(adv.values, [0, 0, 5, 0, -5])


def test_salt_edge_nodes_are_the_graph_action_occurrences():
    g = merging_paths()
    nodes = step_nodes([g], "edge")
    flat = [(i, t) for i, tr in enumerate(g.trajectories) for t in range(len(tr))]
    by_node: dict[int, set] = {}
    for occ, n in zip(flat, nodes):
        by_node.setdefault(int(n), set()).add(occ)
    graph_sets = {frozenset(o) for o in g.graph().action_occurrences().values()}
    assert {frozenset(s) for s in by_node.values()} == graph_sets


def test_salt_nodes_never_span_groups():
    a = group(traj([("s0", "a", 10)]), traj([("s0", "b", 0)]), task_id="A")
    b = group(traj([("s0", "a", 0)]), traj([("s0", "b", 10)]), task_id="B")
    adv = credit.make("salt", mode="mean_norm")([a, b])
    np.testing.assert_allclose(adv.values, [5, -5, -5, 5])


def test_salt_options_are_checked():
    with pytest.raises(ValueError, match="base"):
        credit.make("salt", base="ppo")
    with pytest.raises(ValueError, match="key"):
        credit.make("salt", key="state")
