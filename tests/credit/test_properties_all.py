"""Hypothesis properties of every registered credit module (HGPO, SALT, IGPO, HiPER, EMPG, PPO and
the episode-level ones): permutation invariance, ties, and the reductions the papers state."""

import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym import credit
from creditgym.credit.grpo import episode_advantages
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from tests.credit.test_properties import group_st, per_traj, traj_st


def _u(*parts: object) -> float:
    """A deterministic number in [0, 1) from a step's content (survives permutations)."""
    return zlib.crc32(repr(parts).encode()) / 2**32


def build(spec, distinct: bool = False) -> TrajectoryGroup:
    """A group whose model-filled fields (values, entropies, answer log-probs, HiPER switch)
    are functions of each step's content, so permuting trajectories permutes them too."""
    trajs = []
    for i, path in enumerate(spec):
        steps = []
        for t, (s, a, r, valid) in enumerate(path):
            key = f"{i}-{t}" if distinct else s
            last = t == len(path) - 1
            steps.append(
                Step(
                    state_key=key,
                    action=f"<answer>{s} {a}</answer>" if last else a,
                    reward=r,
                    valid=valid,
                    next_state_key="x",
                    values={h: 5 * _u(h, s, a, t) for h in ("v", "high", "low", "term")},
                    entropies=np.array([_u("h", s, a, t), _u("h2", s, a, t)]),
                    answer_logprob_before=-3 * _u("b", s, a, t),
                    answer_logprob_after=-3 * _u("a", s, a, t),
                    extras={"switch": "SWITCH" if a == "a" else "KEEP", "subgoal": s},
                    info={"ground_truth": "s1 a"},
                )
            )
        # task_baseline: what a tracker hands sspo (one value per task, so the same for all)
        trajs.append(Trajectory(steps=steps, info={"task_baseline": 0.3}))
    return TrajectoryGroup(trajectories=trajs)


ALL = [(name, {}) for name in credit.available()] + [
    ("hgpo", {"base_group": True, "history": 3}),
    ("salt", {"key": "prefix", "base": "rloo"}),
    ("empg", {"base": "gigpo"}),
    ("hiper", {"values": "group"}),
    ("igpo", {"normalization": "separate", "variant": "log_prob_diff"}),
]


@settings(max_examples=40, deadline=None)
@given(spec=group_st, perm_seed=st.integers(0, 10_000))
def test_every_module_is_permutation_invariant(spec, perm_seed):
    perm = np.random.default_rng(perm_seed).permutation(len(spec))
    g, gp = build(spec), build([spec[i] for i in perm])
    for name, opts in ALL:
        a = credit.make(name, **opts)([g])
        b = credit.make(name, **opts)([gp])
        for j, i in enumerate(perm):
            np.testing.assert_allclose(
                per_traj(b.values, gp)[j], per_traj(a.values, g)[i], atol=1e-9, err_msg=name
            )
        for span in a.spans or {}:
            for j, i in enumerate(perm):
                np.testing.assert_allclose(
                    per_traj(b.spans[span], gp)[j], per_traj(a.spans[span], g)[i], atol=1e-9
                )


@settings(max_examples=40, deadline=None)
@given(spec=group_st, ret=st.sampled_from([0.0, 1.0, 10.0]))
def test_tied_returns_give_zero_for_episode_based_methods(spec, ret):
    # Every trajectory returns `ret` (its last step carries it, all actions valid).
    tied = [[(s, a, 0.0, True) for (s, a, _r, _v) in path] for path in spec]
    for path in tied:
        s, a, _, _ = path[-1]
        path[-1] = (s, a, ret, True)
    g = build(tied)
    for name, opts in (
        ("grpo", {}),
        ("rloo", {}),
        ("salt", {}),
        ("salt", {"base": "rloo", "key": "prefix"}),
    ):
        np.testing.assert_allclose(credit.make(name, **opts)([g]).values, 0.0, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(spec=group_st)
def test_all_zero_rewards_give_zero_for_step_level_methods(spec):
    zero = [[(s, a, 0.0, True) for (s, a, _r, _v) in path] for path in spec]
    g = build(zero)
    for name, opts in (
        ("gigpo", {}),
        ("hgpo", {}),
        ("hgpo", {"base_group": True}),
        ("hiper", {"values": "group", "keep_penalty": 0.0, "consistency_penalty": 0.0}),
    ):
        adv = credit.make(name, **opts)([g])
        np.testing.assert_allclose(adv.values, 0.0, atol=1e-9, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(spec=group_st, mode=st.sampled_from(["mean_norm", "mean_std_norm"]))
def test_hgpo_with_k0_equals_gigpo_step_part(spec, mode):
    g = build(spec)
    opts = {"mode": mode, "std": "population"}
    gigpo = credit.make("gigpo", **opts)([g]).values
    step_part = gigpo - episode_advantages([g], mode, "population", 0.1)
    np.testing.assert_allclose(
        credit.make("hgpo", history=0, **opts)([g]).values, step_part, atol=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(
    spec=group_st,
    base=st.sampled_from(["grpo", "rloo"]),
    key=st.sampled_from(["edge", "prefix"]),
    mode=st.sampled_from(["mean_norm", "mean_std_norm"]),
)
def test_salt_with_distinct_trajectories_equals_its_base(spec, base, key, mode):
    g = build(spec, distinct=True)  # no state (hence no edge or prefix) is shared
    salt = credit.make("salt", base=base, key=key, mode=mode)([g]).values
    np.testing.assert_allclose(
        salt, credit.make(base, **({"mode": mode} if base == "grpo" else {}))([g]).values, atol=1e-9
    )


@settings(max_examples=40, deadline=None)
@given(path=traj_st)
def test_singleton_groups_give_zero(path):
    g = build([path], distinct=True)
    for name in ("grpo", "rloo", "gigpo", "hgpo", "salt"):
        assert np.all(credit.make(name)([g]).values == 0), name


@settings(max_examples=40, deadline=None)
@given(spec=group_st, base=st.sampled_from(["grpo", "rloo", "gigpo", "hgpo", "salt"]))
def test_empg_with_flat_entropies_and_no_bonus_is_its_base(spec, base):
    g = build(spec)
    for t in g.trajectories:
        for s in t.steps:
            s.entropies = np.array([0.3, 0.3])
    # Flat entropies: H~ = 0, g = 1, and zeta = 0: A' = A; EMPG then recentres on the batch mean.
    base_values = credit.make(base)([g]).values
    np.testing.assert_allclose(
        credit.make("empg", base=base, zeta=0.0, recenter=False)([g]).values,
        base_values,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        credit.make("empg", base=base, zeta=0.0)([g]).values,
        base_values - base_values.mean(),
        atol=1e-12,
    )


@settings(max_examples=40, deadline=None)
@given(spec=group_st)
def test_ppo_lambda_one_gamma_one_is_return_to_go_minus_value(spec):
    g = build(spec)
    adv = credit.make("ppo", lam=1.0, gamma=1.0, whiten=False)([g]).values
    expected = []
    for t in g.trajectories:
        r = t.rewards()
        togo = np.cumsum(r[::-1])[::-1]
        expected.append(togo - np.array([s.values["v"] for s in t.steps]))
    np.testing.assert_allclose(adv, np.concatenate(expected), atol=1e-9)
