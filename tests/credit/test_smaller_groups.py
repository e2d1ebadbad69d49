"""Every registered credit module on a batch whose groups have 2, 3 and G members.

A group that loses members to env faults trains on the rest when at least 2 remain
(`strategies.keep_group`), so one batch can hold groups of different sizes. These tests check,
module by module, what the README states: every group statistic is taken over the members
present, and the batch-wide statistics (whitening, EMPG's entropy scale) do not see groups.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.base import normalize
from creditgym.credit.hiper import group_parts
from creditgym.credit.returns import discounted_returns, leave_one_out
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers.strategies import keep_group

G = 5
SIZES = (2, 3, G)
PENALTY = 0.1


def member(gi: int, i: int) -> Trajectory:
    """Member i of group gi: 2-4 steps, step 0 shared by every member (state s0, action go),
    later states shared by some members, distinct returns, every model-filled field set."""
    n = 2 + (i + gi) % 3
    steps = []
    for t in range(n):
        last = t == n - 1
        state = "s0" if t == 0 else f"s{t}-{(i + t) % 2}"
        action = "go" if t == 0 else ("a" if (i * t) % 2 == 0 else "b")
        reward = (10.0 if last and i % 2 == 0 else 0.0) + (0.1 * (i + 1) if t == 1 else 0.0)
        steps.append(
            Step(
                state_key=state,
                action=f"<answer>x{i}</answer>" if last else action,
                reward=reward,
                valid=not (i == 1 and t == 1),
                next_state_key=f"after{t}",
                terminated=last,
                values={h: 0.1 * (t + 1) + 0.01 * i + 0.001 * gi for h in ("v", "high", "low")}
                | {"term": 0.2},
                entropies=np.array([0.2 + 0.1 * ((i + t) % 4), 0.3]),
                answer_logprob_before=-2.0 + 0.1 * t,
                answer_logprob_after=-2.0 + 0.1 * t + 0.05 * (i % 3),
                extras={"switch": "SWITCH" if t % 2 == 0 else "KEEP", "subgoal": f"g{t // 2}"},
                info={"golden_answers": ["x0"]},
                sampler_logprobs=[-1.0, -0.01],
                mc_value=5.0 + 0.1 * i if t == 2 else None,
            )
        )
    return Trajectory(
        steps=steps,
        task_id=f"task{gi}",
        seed=gi,
        won=i % 2 == 0,
        info={"task_baseline": 0.3 * gi},
        tree_id=("A" if i < 3 else "B") if gi == 2 else None,
    )


def batch() -> list[TrajectoryGroup]:
    return [
        TrajectoryGroup(
            trajectories=[member(gi, i) for i in range(size)], task_id=f"task{gi}", seed=gi
        )
        for gi, size in enumerate(SIZES)
    ]


def slices(groups: list[TrajectoryGroup], values: np.ndarray) -> list[list[np.ndarray]]:
    """values split into [group][trajectory]."""
    out, pos = [], 0
    for g in groups:
        rows = []
        for t in g.trajectories:
            rows.append(values[pos : pos + len(t)])
            pos += len(t)
        out.append(rows)
    return out


def returns(g: TrajectoryGroup) -> np.ndarray:
    return np.array([t.episode_return(PENALTY) for t in g.trajectories])


def first_steps(groups, values) -> list[np.ndarray]:
    """The advantage of step 0 of every trajectory, per group (episode-level modules broadcast
    one value to every step)."""
    return [np.array([row[0] for row in rows]) for rows in slices(groups, values)]


def sample_norm(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std(ddof=1) + 1e-6)


# ------------------------------------------------------------------------------------------
# the per-module properties (each gets the batch and the module's advantages on it)


def check_grpo(groups, adv):
    for g, a in zip(groups, slices(groups, adv.values)):
        np.testing.assert_allclose(
            np.concatenate([np.full(len(r), r[0]) for r in a]), np.concatenate(a)
        )
        first = np.array([r[0] for r in a])
        np.testing.assert_allclose(first, sample_norm(returns(g)), atol=1e-9)
        assert abs(first.mean()) < 1e-9
    # G' = 2 with distinct returns: (R - mean) / sample std = +-1/sqrt(2).
    two = first_steps(groups, adv.values)[0]
    np.testing.assert_allclose(np.abs(two), 1 / math.sqrt(2), atol=1e-5)


def check_rloo(groups, adv):
    for g, first in zip(groups, first_steps(groups, adv.values)):
        r = returns(g)
        expect = [r[i] - np.delete(r, i).mean() for i in range(len(r))]
        np.testing.assert_allclose(first, expect, atol=1e-9)


def check_gigpo(groups, adv):
    # Episode level = GRPO over the G' members; step level = anchor groups formed from the
    # states the G' members visited, a singleton anchor giving 0.
    step = adv.values - credit.make("grpo")(groups).values
    flat = [(gi, s.state_key) for gi, g in enumerate(groups) for t in g for s in t.steps]
    visits = defaultdict(int)
    for key in flat:
        visits[key] += 1
    singletons = np.array([visits[k] == 1 for k in flat])
    assert singletons.any() and (~singletons).any()
    np.testing.assert_allclose(step[singletons], 0.0, atol=1e-12)
    for gi, g in enumerate(groups):  # the shared start state: Rhat normalised over G' steps
        rhat0 = np.array([t.discounted_returns(0.95, PENALTY)[0] for t in g])
        pos = [j for j, key in enumerate(flat) if key == (gi, "s0")]
        np.testing.assert_allclose(step[pos], sample_norm(rhat0), atol=1e-9)


def check_hgpo(groups, adv):
    # K = 0 is GiGPO's anchor grouping (population std, the HGPO default).
    k0 = credit.make("hgpo", history=0)(groups).values
    gigpo = credit.make("gigpo", std="population")(groups).values
    grpo = credit.make("grpo", std="population")(groups).values
    np.testing.assert_allclose(k0, gigpo - grpo, atol=1e-9)
    # A step whose state no other step of its group shares has no level with >= 2 members.
    flat = [(gi, s.state_key) for gi, g in enumerate(groups) for t in g for s in t.steps]
    counts = defaultdict(int)
    for key in flat:
        counts[key] += 1
    alone = np.array([counts[k] == 1 for k in flat])
    np.testing.assert_allclose(adv.values[alone], 0.0, atol=1e-12)


def check_salt(groups, adv):
    # Step 0 (s0, go) is taken by every member: it gets the mean GRPO advantage over G' = 0.
    for rows in slices(groups, adv.values):
        np.testing.assert_allclose([r[0] for r in rows], 0.0, atol=1e-9)


def check_stratified_grpo(groups, adv):
    alpha = credit.make("stratified_grpo").config.alpha
    for g, first in zip(groups, first_steps(groups, adv.values)):
        r = returns(g)
        lengths = np.array([len(t) for t in g])
        san = np.zeros_like(r)
        for n in set(lengths.tolist()):  # strata: number of steps, among the G' members
            sel = lengths == n
            san[sel] = normalize(r[sel], "mean_std_norm", "sample")
        np.testing.assert_allclose(first, alpha * san + (1 - alpha) * sample_norm(r), atol=1e-9)


def check_igpo(groups, adv):
    # Turn rewards are z-scored over the G' members' turns (population std); A is their sum to
    # go, so the members' step-0 advantages sum to 0 in every group.
    for first in first_steps(groups, adv.values):
        assert abs(first.sum()) < 1e-9


def check_tree_grpo(groups, adv):
    for g, first in zip(groups, first_steps(groups, adv.values)):
        r = returns(g)
        trees = defaultdict(list)
        for i, t in enumerate(g):
            trees[t.tree_id if t.tree_id is not None else i].append(i)
        intra = np.zeros_like(r)
        for members in trees.values():
            intra[members] = normalize(r[members], "mean_std_norm", "sample")
        np.testing.assert_allclose(first, intra + sample_norm(r), atol=1e-9)


def check_r3l(groups, adv):
    for g, first in zip(groups, first_steps(groups, adv.values)):
        s = returns(g) / 10.0
        s = s - s.mean()
        expect = np.where([t.won for t in g], 3.0, np.where(s >= 0, 3.0 * s, s))
        np.testing.assert_allclose(first, expect, atol=1e-9)


def check_spo_chain(groups, adv):
    # Whitening off: V(s_0) is the mean return of the other G' - 1 members.
    raw = credit.make("spo_chain", whiten=False, prob_mask=None)(groups).values
    for g, rows in zip(groups, slices(groups, raw)):
        r = returns(g)
        for i, (t, a) in enumerate(zip(g, rows)):
            cut = next((k for k in range(1, len(t)) if t.steps[k].mc_value is not None), len(t))
            v_next = t.steps[cut].mc_value if cut < len(t) else 0.0
            expect = t.rewards(PENALTY)[:cut].sum() + v_next - np.delete(r, i).mean()
            np.testing.assert_allclose(a[:cut], expect, atol=1e-9)
    check_whitened(adv.values[adv.step_mask()])


def check_spo_tree(groups, adv):
    # Without node ids the tree is the trie of the G' members' histories; V(n) is the mean of
    # its children's V, so the advantages of a node's children sum to 0 (no member ends there).
    raw = credit.make("spo_tree", whiten=False, prob_mask=None, only_nonzero=False)(groups)
    for g, rows in zip(groups, slices(groups, raw.values)):
        child_adv: dict[tuple, dict[tuple, float]] = defaultdict(dict)
        ends = set()
        for t, a in zip(g, rows):
            path: tuple = ()
            for s, x in zip(t.steps, a):
                node = path + ((s.state_key, s.action),)
                child_adv[path][node] = float(x)
                path = node
            ends.add(path)
        assert child_adv[()] and len(child_adv) > 1
        for parent, kids in child_adv.items():
            if parent not in ends:
                assert abs(sum(kids.values())) < 1e-9, (parent, kids)
        np.testing.assert_allclose([r[0] for r in rows], 0.0, atol=1e-12)  # one shared root child
    check_whitened(adv.values[adv.step_mask()])


def check_whitened(x: np.ndarray, ddof: int = 1) -> None:
    assert abs(x.mean()) < 1e-9
    assert abs(x.std(ddof=ddof) - 1.0) < 1e-3


def check_ppo(groups, adv):
    # GAE per trajectory (no group), then z-scored over the batch.
    for g, rows in zip(groups, slices(groups, credit.make("ppo", whiten=False)(groups).values)):
        for t, a in zip(g, rows):
            v = np.array([s.values["v"] for s in t.steps])
            delta = t.rewards(PENALTY) + np.append(v[1:], 0.0) - v
            np.testing.assert_allclose(a, discounted_returns(delta, 0.95), atol=1e-9)
    check_whitened(adv.values, ddof=0)


def check_hiper(groups, adv):
    # Critic values: per-trajectory recursions, z-scored over the batch (population std).
    check_whitened(adv.values, ddof=0)
    check_whitened(adv.spans["switch"], ddof=0)
    # Critic-free: V_low is the mean Monte-Carlo return over the G' members' turns.
    cfg = credit.make("hiper", values="group").config
    for g in groups:
        mc = np.concatenate([discounted_returns(p.rewards, cfg.gamma) for p in group_parts(g, cfg)])
        for p in group_parts(g, cfg):
            np.testing.assert_allclose(p.v_low, mc.mean(), atol=1e-12)


def check_empg(groups, adv):
    # Entropy scale and recentring are batch-wide; groups enter only through the base module.
    assert abs(adv.values.mean()) < 1e-9
    base = credit.make("grpo")(groups).values
    plain = credit.make("empg", zeta=0.0, recenter=False)(groups).values
    assert np.all(np.sign(plain) == np.sign(base))
    flat = batch()
    for t in (t for g in flat for t in g):
        for s in t.steps:
            s.entropies = np.array([0.5, 0.5])
    np.testing.assert_allclose(
        credit.make("empg", zeta=0.0, recenter=False)(flat).values, base, atol=1e-12
    )


def check_sspo(groups, adv):
    # No groups: R - v(task), normalised over the batch's trajectories (sample std).
    raw = np.concatenate([returns(g) - 0.3 * gi for gi, g in enumerate(groups)])
    first = np.concatenate(first_steps(groups, adv.values))
    np.testing.assert_allclose(first, (raw - raw.mean()) / (raw.std(ddof=1) + 1e-8), atol=1e-9)


PROPERTIES = {
    "empg": check_empg,
    "gigpo": check_gigpo,
    "grpo": check_grpo,
    "hgpo": check_hgpo,
    "hiper": check_hiper,
    "igpo": check_igpo,
    "ppo": check_ppo,
    "r3l": check_r3l,
    "rloo": check_rloo,
    "salt": check_salt,
    "spo_chain": check_spo_chain,
    "spo_tree": check_spo_tree,
    "sspo": check_sspo,
    "stratified_grpo": check_stratified_grpo,
    "tree_grpo": check_tree_grpo,
}

#: Modules whose advantages for a group depend on that group alone (with these options): the
#: same group gives the same values alone and inside a batch of other group sizes.
GROUP_LOCAL = {
    "gigpo": {},
    "grpo": {},
    "hgpo": {"base_group": True},
    "igpo": {"normalization": "separate"},
    "ppo": {"whiten": False},
    "r3l": {},
    "rloo": {},
    "salt": {"base": "rloo", "key": "prefix"},
    "spo_chain": {"whiten": False},
    "spo_tree": {"whiten": False},
    "stratified_grpo": {},
    "tree_grpo": {},
}


def test_every_registered_module_has_a_smaller_group_property():
    assert set(PROPERTIES) == set(credit.available())


def test_the_batch_holds_unequal_groups_that_keep_group_keeps():
    groups = batch()
    assert [len(g) for g in groups] == list(SIZES)
    assert keep_group(remaining=2, lost=G - 2) and not keep_group(remaining=1, lost=G - 1)


@pytest.mark.parametrize("name", credit.available())
def test_module_on_groups_of_2_3_and_G(name):
    groups = batch()
    n = sum(g.num_steps for g in groups)
    adv = credit.make(name)(groups)
    assert adv.values.shape == (n,)
    assert np.all(np.isfinite(adv.values)), name
    if adv.mask is not None:
        assert adv.mask.shape == (n,) and adv.mask.dtype == bool
        assert adv.mask.any()
    if adv.weight is not None:
        assert adv.weight.shape == (n,)
    for span, v in (adv.spans or {}).items():
        assert v.shape == (n,) and np.all(np.isfinite(v)), span
    for head, target in getattr(adv, "targets", {}).items():
        assert target.shape == (n,) and np.isfinite(target).any(), head
    assert np.isfinite(list(adv.diagnostics.values())).all()
    assert np.abs(adv.values).max() > 0, f"{name} gave all-zero advantages"
    PROPERTIES[name](groups, adv)


@pytest.mark.parametrize("name", sorted(GROUP_LOCAL))
def test_a_smaller_group_gets_what_it_gets_alone(name):
    module = credit.make(name, **GROUP_LOCAL[name])
    groups = batch()
    together = slices(groups, module(groups).values)
    for gi, g in enumerate(groups):
        alone = slices([g], module([g]).values)[0]
        for a, b in zip(together[gi], alone):
            np.testing.assert_allclose(a, b, atol=1e-12, err_msg=f"{name} group of {len(g)}")


def test_leave_one_out_factor_uses_the_members_present():
    r = np.array([1.0, 4.0, 0.0, 2.0, 6.0])
    ids = np.array([0, 0, 1, 1, 1])
    np.testing.assert_allclose(leave_one_out(r, ids), [-3.0, 3.0, -4.0, -1.0, 5.0])


#: Non-default options that change how a module forms or normalises its sets.
VARIANTS = [
    ("empg", {"base": "hiper", "base_options": {"values": "group"}}),
    ("gigpo", {"episode_score": "verl_agent"}),
    ("gigpo", {"per_step_rows": True, "std": "population"}),
    ("gigpo", {"similarity": 0.9}),
    ("grpo", {"per_step_rows": True, "mode": "mean_norm"}),
    ("hgpo", {"history": 3, "std": "sample", "mode": "mean_norm"}),
    ("hiper", {"values": "group", "group_bootstrap": "return"}),
    ("igpo", {"variant": "log_prob_diff", "std": "sample"}),
    ("r3l", {"max_reward_adv": 1.0}),
    ("spo_chain", {"v0": "ref", "prob_mask": None}),
    ("spo_tree", {"adv_method": "grpo", "only_nonzero": False}),
    ("sspo", {"per_step_rows": True}),
    ("stratified_grpo", {"alpha": 1.0, "stratum": "num_search_calls"}),
    ("tree_grpo", {"shared_prefix": "mean"}),
    ("tree_grpo", {"variant": "tree_inner", "std": "population"}),
]


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=lambda v: str(v))
def test_option_variants_on_groups_of_2_3_and_G(name, options):
    groups = batch()
    n = sum(g.num_steps for g in groups)
    adv = credit.make(name, **options)(groups)
    assert adv.values.shape == (n,) and np.all(np.isfinite(adv.values))
    for v in (adv.spans or {}).values():
        assert v.shape == (n,) and np.all(np.isfinite(v))
    for arr in (adv.mask, adv.weight):
        assert arr is None or arr.shape == (n,)
    if name in GROUP_LOCAL:  # with its locality options (whitening off) added
        module = credit.make(name, **{**GROUP_LOCAL[name], **options})
        together = slices(groups, module(groups).values)
        for gi, g in enumerate(groups):
            for a, b in zip(together[gi], slices([g], module([g]).values)[0]):
                np.testing.assert_allclose(a, b, atol=1e-12, err_msg=f"{name} {options}")
