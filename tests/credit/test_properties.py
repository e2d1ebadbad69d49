"""Hypothesis property tests shared by the episode- and step-level credit modules."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym import credit
from creditgym.credit.grpo import episode_advantages
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup

MODULES = ("grpo", "rloo", "gigpo")
STATES = ["s0", "s1", "s2", "s3"]

step_st = st.tuples(
    st.sampled_from(STATES),
    st.sampled_from(["a", "b"]),
    st.sampled_from([0.0, 1.0, 10.0]),
    st.booleans(),
)
traj_st = st.lists(step_st, min_size=1, max_size=6)
group_st = st.lists(traj_st, min_size=2, max_size=5)


def build(spec, distinct: bool = False) -> TrajectoryGroup:
    trajs = []
    for i, path in enumerate(spec):
        steps = []
        for t, (s, a, r, valid) in enumerate(path):
            key = f"{i}-{t}" if distinct else s
            steps.append(Step(state_key=key, action=a, reward=r, valid=valid, next_state_key="x"))
        trajs.append(Trajectory(steps=steps))
    return TrajectoryGroup(trajectories=trajs)


def per_traj(values, g):
    out, pos = [], 0
    for t in g.trajectories:
        out.append(values[pos : pos + len(t)])
        pos += len(t)
    return out


@settings(max_examples=60, deadline=None)
@given(spec=group_st, perm_seed=st.integers(0, 10_000))
def test_permuting_trajectories_permutes_advantages(spec, perm_seed):
    perm = np.random.default_rng(perm_seed).permutation(len(spec))
    g, gp = build(spec), build([spec[i] for i in perm])
    for name in MODULES:
        a = per_traj(credit.make(name)([g]).values, g)
        b = per_traj(credit.make(name)([gp]).values, gp)
        for j, i in enumerate(perm):
            np.testing.assert_allclose(b[j], a[i], atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(spec=group_st, c=st.floats(-20, 20))
def test_constant_return_shift_leaves_episode_advantages_unchanged(spec, c):
    g = build(spec)
    shifted = build(spec)
    for t in shifted.trajectories:
        t.steps[-1].reward += c  # every trajectory's return moves by c
    for name, opts in (("grpo", {"mode": "mean_norm"}), ("rloo", {}), ("grpo", {})):
        np.testing.assert_allclose(
            credit.make(name, **opts)([g]).values,
            credit.make(name, **opts)([shifted]).values,
            atol=1e-6,
        )


@settings(max_examples=60, deadline=None)
@given(spec=group_st, c=st.floats(-20, 20))
def test_constant_step_return_shift_leaves_gigpo_step_part_unchanged(spec, c):
    gamma = 0.95
    g, shifted = build(spec), build(spec)
    for t in shifted.trajectories:
        # r'_t = r_t + c (1 - gamma) before the end and r'_T = r_T + c make every Rhat'_t = Rhat_t + c.
        for k, s in enumerate(t.steps):
            s.reward += c if k == len(t.steps) - 1 else c * (1 - gamma)
    mod = credit.make("gigpo", mode="mean_norm", gamma=gamma)

    def step_part(x):
        return mod([x]).values - episode_advantages([x], "mean_norm", "sample", 0.1)

    np.testing.assert_allclose(step_part(g), step_part(shifted), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(path=traj_st)
def test_singleton_groups_give_zero(path):
    g = build([path], distinct=True)
    for name in MODULES:
        assert np.all(credit.make(name)([g]).values == 0)


@settings(max_examples=60, deadline=None)
@given(spec=group_st, which=st.integers(0, 100))
def test_an_invalid_action_lowers_its_advantage(spec, which):
    spec = [[(s, a, r, True) for (s, a, r, _v) in path] for path in spec]
    g = build(spec)
    i = which % len(spec)
    t = which % len(spec[i])
    bad = [list(p) for p in spec]
    s, a, r, _ = bad[i][t]
    bad[i][t] = (s, a, r, False)
    gb = build(bad)
    for name, opts in (
        ("grpo", {"mode": "mean_norm"}),
        ("rloo", {}),
        ("gigpo", {"mode": "mean_norm"}),
    ):
        before = per_traj(credit.make(name, **opts)([g]).values, g)[i][t]
        after = per_traj(credit.make(name, **opts)([gb]).values, gb)[i][t]
        assert after < before, (name, before, after)
