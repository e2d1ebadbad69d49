from dataclasses import replace

import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.hiper import HiPERConfig, group_parts, hierarchical_advantages, hiper_rewards
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup

# Four turns: SWITCH, KEEP, SWITCH, KEEP -> segments {0, 1} and {2, 3}; env rewards [0, 0, 0, 10].
SWITCHES = ["SWITCH", "KEEP", "SWITCH", "KEEP"]
SUBGOALS = ["find key", "find key", "open door", "open door"]
V_HIGH = {0: 1.0, 2: 4.0}
V_LOW = [2.0, 3.0, 5.0, 6.0]
V_TERM = [1.0, 1.0, 2.0, 2.0]


def hier_traj(switches=SWITCHES, subgoals=SUBGOALS, rewards=(0, 0, 0, 10)):
    steps = []
    for t, (sw, sg, r) in enumerate(zip(switches, subgoals, rewards)):
        values = {"low": V_LOW[t], "term": V_TERM[t], "high": V_HIGH.get(t, 0.0)}
        steps.append(
            Step(
                state_key=f"s{t}",
                action=f"a{t}",
                reward=float(r),
                values=values,
                extras={"switch": sw, "subgoal": sg},
            )
        )
    return Trajectory(steps=steps)


NO_PENALTY = {"keep_penalty": 0.0, "consistency_penalty": 0.0, "gamma": 0.5, "lam_seg": 0.5}


def test_hierarchical_advantages_hand_computed():
    # gamma 0.5, lambda_turn 1, lambda_seg 0.5.
    # Low level. Segment {2,3} ends the episode (bootstrap 0):
    #   t3: delta = 10 + 0.5 * 0 - 6 = 4 -> A_low = 4
    #   t2: delta = 0 + 0.5 * V_low(3) - 5 = -2 -> A_low = -2 + 0.5 * 1 * 4 = 0
    # Segment {0,1} bootstraps with V_high(t2) = 4:
    #   t1: delta = 0 + 0.5 * 4 - 3 = -1 -> A_low = -1
    #   t0: delta = 0 + 0.5 * 3 - 2 = -0.5 -> A_low = -0.5 + 0.5 * -1 = -1
    # Switch: G = [0.25 * 4, 0.5 * 4, 0.5 * 10, 10] = [1, 2, 5, 10]; A_term = G - V_term.
    # High level: segment 1: R = 0 + 0.5 * 10 = 5, d = 2: delta = 5 + 0.25 * 0 - 4 = 1 -> 1.
    #   segment 0: R = 0, delta = 0 + 0.25 * 4 - 1 = 0 -> A_high = 0 + 0.25 * 0.5 * 1 = 0.125.
    cfg = HiPERConfig(**NO_PENALTY)
    starts = np.array([True, False, True, False])
    v_high = np.array([1.0, np.nan, 4.0, np.nan])
    a_high, a_low, a_term, g = hierarchical_advantages(
        np.array([0, 0, 0, 10.0]), starts, v_high, np.array(V_LOW), np.array(V_TERM), cfg
    )
    np.testing.assert_allclose(a_low, [-1, -1, 0, 4])
    np.testing.assert_allclose(g, [1, 2, 5, 10])
    np.testing.assert_allclose(a_term, [0, 1, 3, 8])
    np.testing.assert_allclose(a_high[[0, 2]], [0.125, 1])
    assert np.isnan(a_high[[1, 3]]).all()


def z(x):
    x = np.asarray(x, dtype=float)
    return (x - x.mean()) / (x.std() + 1e-6)


def test_hiper_module_routes_z_scored_advantages_to_spans():
    adv = credit.make("hiper", **NO_PENALTY)([TrajectoryGroup(trajectories=[hier_traj()])])
    zl, zt, zh = z([-1, -1, 0, 4]), z([0, 1, 3, 8]), z([0.125, 1])
    np.testing.assert_allclose(adv.spans["action"], zl)
    np.testing.assert_allclose(adv.spans["switch"], zt)
    # Boundary turns get A_high, KEEP turns the low-level advantage (keep_subgoal="low").
    np.testing.assert_allclose(adv.spans["subgoal"], [zh[0], zl[1], zh[1], zl[3]])
    np.testing.assert_allclose(adv.values, zl)
    # Targets: V_high + A_high at boundaries, V_low + A_low, and G.
    np.testing.assert_allclose(adv.targets["high"][[0, 2]], [1.125, 5])
    np.testing.assert_allclose(adv.targets["low"], [1, 2, 5, 10])
    np.testing.assert_allclose(adv.targets["term"], [1, 2, 5, 10])
    assert adv.diagnostics["segments_per_traj"] == 2
    zero = credit.make("hiper", keep_subgoal="zero", **NO_PENALTY)
    out = zero([TrajectoryGroup(trajectories=[hier_traj()])])
    np.testing.assert_allclose(out.spans["subgoal"], [zh[0], 0, zh[1], 0])


def test_keep_and_consistency_penalties():
    # keep_mode="fixed", p = -0.3: KEEP turns 1 and 3 add -0.3 each; turn 3 changed its subgoal
    # ("open door" -> "go back"), so it also adds the -0.3 consistency penalty:
    # r = [0, -0.3, 0, 10 - 0.6].
    subgoals = ["find key", "find key", "open door", "go back"]
    cfg = {"gamma": 0.5, "lam_seg": 0.5}
    adv = credit.make("hiper", keep_mode="fixed", **cfg)(
        [TrajectoryGroup(trajectories=[hier_traj(subgoals=subgoals)])]
    )
    # Low level: t3 = 9.4 - 6 = 3.4; t2 = 0.5 * 6 - 5 + 0.5 * 3.4 = -0.3;
    #   t1 = -0.3 + 0.5 * 4 - 3 = -1.3; t0 = 0.5 * 3 - 2 + 0.5 * -1.3 = -1.15.
    np.testing.assert_allclose(adv.spans["action"], z([-1.15, -1.3, -0.3, 3.4]))
    assert adv.diagnostics["consistency_violation_frac"] == 0.5
    alias = credit.make("hiper", keep_mode="per_turn", **cfg)(
        [TrajectoryGroup(trajectories=[hier_traj(subgoals=subgoals)])]
    )
    np.testing.assert_allclose(alias.spans["action"], adv.spans["action"])
    # "normalized", p = -3.5: p x keep ratio (2/4) spread over the 2 KEEP turns = -3.5 / 4 each.
    norm = credit.make(
        "hiper", keep_penalty=-3.5, keep_mode="normalized", consistency_penalty=0, **cfg
    )
    out = norm([TrajectoryGroup(trajectories=[hier_traj()])])
    # t3 = 10 - 0.875 - 6 = 3.125; t2 = -2 + 0.5 * 3.125 = -0.4375; t1 = -0.875 - 1 = -1.875;
    # t0 = -0.5 + 0.5 * -1.875 = -1.4375.
    np.testing.assert_allclose(out.spans["action"], z([-1.4375, -1.875, -0.4375, 3.125]))


def test_normalized_keep_penalty_is_the_default_and_matches_the_reference_example():
    # SWITCH, KEEP, KEEP, KEEP with rewards 0, 0, 0, 10 and p = -0.3 (the default, normalized):
    # T = 4, K = 3: p x (K / T) / K = -0.3 / 4 = -0.075 on each KEEP turn ->
    # r = [0, -0.075, -0.075, 9.925]; the trajectory pays p x keep ratio = -0.225 in all.
    cfg = HiPERConfig()
    assert (cfg.keep_mode, cfg.keep_penalty, cfg.consistency_penalty) == ("normalized", -0.3, -0.3)
    t = hier_traj(switches=["SWITCH", "KEEP", "KEEP", "KEEP"], subgoals=["g"] * 4)
    r, starts, viol = hiper_rewards(t, cfg)
    np.testing.assert_allclose(r, [0, -0.075, -0.075, 9.925])
    assert starts.tolist() == [True, False, False, False] and viol == 0
    # One turn (T = 1) pays no normalized keep penalty, as the reference skips it.
    one = hier_traj(switches=["KEEP"], subgoals=["g"], rewards=(10,))
    np.testing.assert_allclose(hiper_rewards(one, cfg)[0], [10])


def test_a_keep_on_turn_0_is_penalised_like_any_other():
    # KEEP, SWITCH, KEEP, SWITCH, rewards 0, 0, 0, 10. Turn 0 still starts a segment, but it is a
    # KEEP: normalized p = -0.3, T = 4, K = 2 -> -0.075 on turns 0 and 2; fixed -> -0.3 on each.
    t = hier_traj(switches=["KEEP", "SWITCH", "KEEP", "SWITCH"], subgoals=["a", "b", "b", "c"])
    r, starts, _ = hiper_rewards(t, HiPERConfig())
    np.testing.assert_allclose(r, [-0.075, 0, -0.075, 10])
    assert starts.tolist() == [True, True, False, True]
    np.testing.assert_allclose(
        hiper_rewards(t, HiPERConfig(keep_mode="fixed"))[0], [-0.3, 0, -0.3, 10]
    )


def test_no_consistency_penalty_when_a_subgoal_is_missing():
    # fixed p = 0 (keep penalty off), consistency -0.3. Turn 1 KEEPs with no subgoal (None),
    # turn 2 KEEPs with a subgoal after turn 1's missing one, turn 3 KEEPs and changes "x" -> "y":
    # only turn 3 has both subgoals and a change -> r = [0, 0, 0, 10 - 0.3].
    t = hier_traj(switches=["SWITCH", "KEEP", "KEEP", "KEEP"], subgoals=["a", None, "x", "y"])
    r, _, viol = hiper_rewards(t, HiPERConfig(keep_penalty=0.0))
    np.testing.assert_allclose(r, [0, 0, 0, 9.7])
    assert viol == 1


def test_positive_penalties_are_refused_with_the_sign_convention():
    with pytest.raises(ValueError, match="keep_penalty=-0.3"):
        credit.make("hiper", keep_penalty=0.3)
    with pytest.raises(ValueError, match="consistency_penalty"):
        credit.make("hiper", consistency_penalty=0.3)
    with pytest.raises(ValueError, match="keep_mode"):
        credit.make("hiper", keep_mode="ratio")


def test_gamma_defaults_to_the_references_1():
    assert HiPERConfig().gamma == 1.0


def test_group_bootstrap_return_does_not_count_later_segments_twice():
    # T1 = two SWITCH turns with rewards 0, 1; T2 = one SWITCH turn with reward 0.
    # gamma 0.5, lambda_seg 0.95, values="group", group_bootstrap="return", no penalties.
    # MC returns at the boundaries: T1 t0 = 0 + 0.5 * 1 = 0.5, T1 t1 = 1, T2 t0 = 0;
    # V_high = their mean 0.5.
    # T1 t0: delta = R_0 + gamma * G(T1, t1) - V_high = 0 + 0.5 * 1 - 0.5 = 0, which already
    # holds segment 1's reward; chaining would add gamma * lambda_seg * A_high(T1, t1)
    # = 0.5 * 0.95 * (1 - 0.5) = 0.2375 (the old, double-counted value). Consistent: 0.
    # T1 t1: 1 - 0.5 = 0.5; T2 t0: 0 - 0.5 = -0.5.
    t1 = hier_traj(switches=["SWITCH", "SWITCH"], subgoals=["a", "b"], rewards=(0, 1))
    t2 = hier_traj(switches=["SWITCH"], subgoals=["a"], rewards=(0,))
    cfg = HiPERConfig(
        gamma=0.5,
        lam_seg=0.95,
        values="group",
        group_bootstrap="return",
        keep_penalty=0.0,
        consistency_penalty=0.0,
    )
    p1, p2 = group_parts(TrajectoryGroup(trajectories=[t1, t2]), cfg)
    np.testing.assert_allclose(p1.v_high, [0.5, 0.5])
    np.testing.assert_allclose(p1.a_high, [0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(p2.a_high, [-0.5])
    # The group-mean bootstrap ("mean") still chains GAE over segments (lambda_seg):
    # T1 t1: 1 - 0.5 = 0.5; T1 t0: 0 + 0.5 * 0.5 - 0.5 + 0.5 * 0.95 * 0.5 = -0.0125.
    q1, _ = group_parts(
        TrajectoryGroup(trajectories=[t1, t2]), replace(cfg, group_bootstrap="mean")
    )
    np.testing.assert_allclose(q1.a_high, [-0.0125, 0.5])


def test_truncated_episode_bootstraps_from_its_own_value_estimates():
    # The four-turn trajectory (segments {0, 1}, {2, 3}), gamma 0.5, lambda_seg 0.5, no
    # penalties, cut by the time limit: truncated, not terminated. After turn 3 the low level
    # bootstraps with V_low(3) = 6, the switch returns and the high level with V_high(2) = 4.
    #   t3: A_low = 10 + 0.5 * 6 - 6 = 7; t2: -2 + 0.5 * 7 = 1.5 (t1, t0 unchanged: -1, -1).
    #   G: t3 = 10 + 0.5 * 4 = 12, t2 = 0.5 * 12 = 6; t1, t0 bootstrap V_high(2): 2, 1.
    #   segment 1: delta = 5 + 0.25 * 4 - 4 = 2; segment 0: 0 + 0.25 * 4 - 1 + 0.125 * 2 = 0.25.
    cfg = HiPERConfig(**NO_PENALTY)
    t = hier_traj()
    t.steps[-1].truncated = True
    (p,) = group_parts(TrajectoryGroup(trajectories=[t]), cfg)
    np.testing.assert_allclose(p.a_low, [-1, -1, 1.5, 7])
    np.testing.assert_allclose(p.g, [1, 2, 6, 12])
    np.testing.assert_allclose(p.a_high[[0, 2]], [0.25, 2])
    # Terminated episodes (and bootstrap_truncated=False) bootstrap 0, as before.
    (q,) = group_parts(TrajectoryGroup(trajectories=[t]), replace(cfg, bootstrap_truncated=False))
    np.testing.assert_allclose(q.a_low, [-1, -1, 0, 4])
    # values="group": the estimate is the group mean. MC returns (gamma 0.5) [1.25, 2.5, 5, 10],
    # V_low = 4.6875 -> t3: A_low = 10 + 0.5 * 4.6875 - 4.6875 = 7.65625.
    (g,) = group_parts(TrajectoryGroup(trajectories=[t]), replace(cfg, values="group"))
    assert g.a_low[3] == pytest.approx(7.65625)


def test_critic_free_group_values():
    # MC returns (gamma 0.5) of r = [0, 0, 0, 10]: [1.25, 2.5, 5, 10]. V_low = V_term = their
    # mean 4.6875; V_high = mean over the boundary turns (t0, t2) = 3.125.
    # G = [0.25 * 3.125, 0.5 * 3.125, 5, 10] -> A_term = G - 4.6875.
    g = TrajectoryGroup(trajectories=[hier_traj()])
    for s in g.trajectories[0].steps:
        s.values = None  # the critic-free variant never reads them
    mod = credit.make("hiper", values="group", **NO_PENALTY)
    assert mod.needs == frozenset()
    adv = mod([g])
    np.testing.assert_allclose(adv.targets["term"], [0.78125, 1.5625, 5, 10])
    np.testing.assert_allclose(adv.spans["switch"], z(np.array([0.78125, 1.5625, 5, 10]) - 4.6875))


def test_switch_is_required_but_a_malformed_turn_counts_as_keep():
    t = hier_traj()
    t.steps[2].extras = {}
    with pytest.raises(ValueError, match="switch"):
        credit.make("hiper")([TrajectoryGroup(trajectories=[t])])
    t.steps[2].valid = False  # malformed output: no switch parsed -> KEEP, one segment
    adv = credit.make("hiper", values="group")([TrajectoryGroup(trajectories=[t])])
    # Turn 2 no longer starts a segment: one segment (turn 0) for the whole trajectory.
    assert adv.diagnostics["segments_per_traj"] == 1
    assert credit.make("hiper").needs == {"values"}


def test_reads_the_llm_agents_parsed_fields():
    # The LLM agent records its parse under extras["parsed"]; the result must be identical.
    t = hier_traj()
    for s in t.steps:
        s.extras = {"parsed": dict(s.extras), "format_error": ""}
    mod = credit.make("hiper", **NO_PENALTY)
    a = mod([TrajectoryGroup(trajectories=[t])])
    b = mod([TrajectoryGroup(trajectories=[hier_traj()])])
    for name in ("switch", "subgoal", "action"):
        np.testing.assert_allclose(a.spans[name], b.spans[name])


def test_critic_free_bootstrap_with_the_trajectorys_own_return():
    # group_bootstrap="return": segment 0 bootstraps with this trajectory's MC return at t2 (5)
    # instead of the group mean, so with lambda_turn = 1 every low-level advantage is its MC
    # return [1.25, 2.5, 5, 10] minus V_low = 4.6875, and G equals the MC returns.
    g = TrajectoryGroup(trajectories=[hier_traj()])
    mod = credit.make("hiper", values="group", group_bootstrap="return", **NO_PENALTY)
    adv = mod([g])
    mc = np.array([1.25, 2.5, 5, 10])
    np.testing.assert_allclose(adv.targets["term"], mc)
    np.testing.assert_allclose(adv.targets["low"], mc)  # A_low + V_low
    np.testing.assert_allclose(adv.spans["action"], z(mc - 4.6875))
