import math

import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.igpo import word_f1
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup


def qa_traj(logprobs, answer, truth="New York City", valid=True):
    """Search turns with (before, after) answer log-probs, then a final answer turn."""
    steps = [
        Step(
            state_key=f"q{t}",
            action=f"<search>query {t}</search>",
            reward=0.0,
            answer_logprob_before=b,
            answer_logprob_after=a,
        )
        for t, (b, a) in enumerate(logprobs)
    ]
    steps.append(
        Step(
            state_key="q-end", action=answer, reward=0.0, valid=valid, info={"ground_truth": truth}
        )
    )
    return Trajectory(steps=steps)


def qa_group():
    # traj 0: one search raising log P(gt) from -2 to -1, then the exact answer (F1 = 1).
    # traj 1: one search lowering it from -2 to -3, then "York" (P = 1, R = 1/3 -> F1 = 0.5).
    return TrajectoryGroup(
        trajectories=[
            qa_traj([(-2.0, -1.0)], "<answer>new york city!</answer>"),
            qa_traj([(-2.0, -3.0)], "<answer>York</answer>"),
        ]
    )


def test_word_f1():
    assert word_f1("New York City", "new york city.") == 1.0
    assert word_f1("York", "New York City") == pytest.approx(0.5)  # 2 * 1 * (1/3) / (4/3)
    assert word_f1("the", "a") == 0.0  # articles are dropped


def test_igpo_joint_prob_diff_hand_computed():
    # r = [e^-1 - e^-2, 1.0, e^-3 - e^-2, 0.5]; joint population z-score over the group's 4 turns;
    # A_t = z_t + 1.0 * A_{t+1} inside each trajectory.
    r = np.array([math.exp(-1) - math.exp(-2), 1.0, math.exp(-3) - math.exp(-2), 0.5])
    z = (r - r.mean()) / (r.std() + 1e-6)
    adv = credit.make("igpo")([qa_group()])
    np.testing.assert_allclose(adv.values, [z[0] + z[1], z[1], z[2] + z[3], z[3]])
    assert adv.diagnostics["ig_reward_pos_frac"] == 0.5


def test_igpo_separate_normalisation():
    # IG rewards {0.2325, -0.0855} and F1 rewards {1.0, 0.5} are z-scored apart: two members
    # each -> +-(d/2) / (d/2 + 1e-6) ~ +-1. A = [z_ig + z_f1, z_f1] per trajectory.
    adv = credit.make("igpo", normalization="separate")([qa_group()])
    d_ig = (math.exp(-1) - math.exp(-3)) / 2
    zi, zf = d_ig / (d_ig + 1e-6), 0.25 / (0.25 + 1e-6)
    np.testing.assert_allclose(adv.values, [zi + zf, zf, -zi - zf, -zf])


def test_igpo_log_prob_diff_and_gamma():
    # log_prob_diff: r = [1.0, 1.0, -1.0, 0.5] (mean 0.375); gamma 0.5: A_0 = z_0 + 0.5 z_1.
    r = np.array([1.0, 1.0, -1.0, 0.5])
    z = (r - r.mean()) / (r.std() + 1e-6)
    adv = credit.make("igpo", variant="log_prob_diff", gamma=0.5)([qa_group()])
    np.testing.assert_allclose(adv.values, [z[0] + 0.5 * z[1], z[1], z[2] + 0.5 * z[3], z[3]])


def test_malformed_or_missing_answer_gets_the_format_penalty():
    g = TrajectoryGroup(
        trajectories=[
            qa_traj([], "I think it is New York City"),
            qa_traj([], "<answer>New York City</answer>", valid=False),
            qa_traj([], "<answer>New York City</answer>"),
        ]
    )
    # r = [-2, -2, 1]: mean -1, population std sqrt(2) -> z = [-1, -1, 2] / (sqrt 2 + 1e-6)
    adv = credit.make("igpo")([g])
    np.testing.assert_allclose(adv.values, np.array([-1, -1, 2]) / (math.sqrt(2) + 1e-6))
    assert adv.diagnostics["malformed_final_frac"] == pytest.approx(2 / 3)


def test_igpo_missing_inputs_are_clear_errors():
    g = qa_group()
    g.trajectories[0].steps[0].answer_logprob_after = None
    with pytest.raises(ValueError, match="answer_logprob"):
        credit.make("igpo")([g])
    g = qa_group()
    g.trajectories[0].steps[-1].info = {}
    g.trajectories[0].steps[0].info = {}
    with pytest.raises(ValueError, match="ground_truth"):
        credit.make("igpo")([g])
    assert credit.make("igpo").needs == {"answer_logprobs"}


def test_f1_is_scored_against_the_best_matching_golden_answer():
    # Golden answers ["NYC", "New York City"]: "new york city!" scores F1 0 against "NYC" and 1
    # against "New York City" -> 1. "York": 0 vs "NYC", P = 1, R = 1/3 -> F1 0.5 vs the other.
    g = qa_group()
    for t in g.trajectories:
        t.steps[-1].info = {"ground_truth": "NYC", "golden_answers": ["NYC", "New York City"]}
    from creditgym.credit.igpo import turn_rewards

    c = credit.make("igpo").config
    assert turn_rewards(g.trajectories[0], c)[0][-1] == pytest.approx(1.0)
    assert turn_rewards(g.trajectories[1], c)[0][-1] == pytest.approx(0.5)
    # With only the first golden answer ("NYC") both final F1s would be 0.
    assert word_f1("new york city!", "NYC") == 0.0
