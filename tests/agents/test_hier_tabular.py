import numpy as np
import pytest

from creditgym import (
    credit,
    envs,  # noqa: F401  (registers KeyRooms)
)
from creditgym.agents.base import Context
from creditgym.agents.hier_tabular import HierTabularAgent, subgoal_candidates
from creditgym.agents.parsing import parse_hiper
from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers.rollout import EnvPool, collect


def test_turns_follow_the_hiper_format_and_keep_their_subgoal():
    with EnvPool("creditgym/KeyRooms-v0", 4, env_kwargs={"level": "small"}) as pool:
        batch = collect(pool, HierTabularAgent(seed=3), [0], 4, [7])
    for traj in batch.groups[0].trajectories:
        assert traj.steps[0].extras["switch"] == "SWITCH"  # turn 0 always starts a segment
        for t, step in enumerate(traj.steps):
            parsed = parse_hiper(step.text)
            assert parsed.format_ok and parsed.action == step.action
            assert parsed.fields["switch"] == step.extras["switch"]
            assert step.extras["subgoal"] in step.info["subgoals"]
            if t and step.extras["switch"] == "KEEP":
                assert step.extras["subgoal"] == traj.steps[t - 1].extras["subgoal"]
    adv = credit.make("hiper", values="group")(batch.groups)
    assert set(adv.spans) == {"switch", "subgoal", "action"}


def _one_step_group(switch: str, t0_goal: str = "g1") -> TrajectoryGroup:
    acts = ["left", "right"]
    steps = [
        Step("s0", "left", 0.0, admissible_actions=acts,
             extras={"switch": "SWITCH", "subgoal": t0_goal, "subgoals": ["g1", "g2"]}),
        Step("s1", "right", 1.0, admissible_actions=acts,
             extras={"switch": switch, "subgoal": "g2" if switch == "SWITCH" else t0_goal,
                     "subgoals": ["g1", "g2"]}),
    ]  # fmt: skip
    return TrajectoryGroup(trajectories=[Trajectory(steps=steps)])


def test_span_advantages_train_their_own_tables():
    # lr 1, one trajectory: each table moves by A * (onehot - 1/2) from uniform logits.
    agent = HierTabularAgent(lr=1.0)
    g = _one_step_group("SWITCH")
    spans = {
        "switch": np.array([0.0, 2.0]),
        "subgoal": np.array([1.0, -1.0]),
        "action": np.array([4.0, 0.0]),
    }
    agent.update([g], Advantages(values=spans["action"], spans=spans))
    # pi_low(. | s0, g1): logits [+2, -2] after A = 4 on "left".
    np.testing.assert_allclose(agent.low.entries[("s0", "g1")][1], [2.0, -2.0])
    # pi_high(. | s0): A = 1 on g1 -> [0.5, -0.5]; at s1 A = -1 on g2 -> [0.5, -0.5] too.
    np.testing.assert_allclose(agent.high.entries["s0"][1], [0.5, -0.5])
    np.testing.assert_allclose(agent.high.entries["s1"][1], [0.5, -0.5])
    # pi_switch(. | s1, g1): A = 2 on SWITCH -> [KEEP -1, SWITCH +1]; turn 0 never trains it.
    np.testing.assert_allclose(agent.switch.entries[("s1", "g1")][1], [-1.0, 1.0])
    assert ("s0", None) not in agent.switch.entries


def test_flat_advantages_train_every_table_and_marginal_probs():
    agent = HierTabularAgent(lr=1.0)
    g = _one_step_group("KEEP")
    agent.update([g], Advantages(values=np.array([2.0, 2.0])))
    # KEEP turn: no subgoal choice, so only s0 has a high-level entry.
    assert set(agent.high.entries) == {"s0"}
    np.testing.assert_allclose(agent.switch.entries[("s1", "g1")][1], [1.0, -1.0])
    # A = 2 on "left" at (s0, g1): gradient 2 * ([1, 0] - [1/2, 1/2]) = [1, -1] goes to the
    # (s0, g1) offset and to the logits shared by every subgoal at s0.
    np.testing.assert_allclose(agent.low.entries[("s0", "g1")][1], [1.0, -1.0])
    np.testing.assert_allclose(agent.table["s0"][1], [1.0, -1.0])
    p = agent.probs("s0", ["left", "right"], ["g1", "g2"])
    # pi_high(g1|s0) = sigmoid(2) (logits [1, -1]); pi_low(left|s0,g1) = softmax([2, -2]) =
    # sigmoid(4); g2 has only the shared logits [1, -1]: sigmoid(2).
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(p[0], sig(2) * sig(4) + (1 - sig(2)) * sig(2))
    assert p.sum() == pytest.approx(1.0)


def test_warm_start_table_sets_every_subgoals_prior():
    agent = HierTabularAgent()
    agent.table["s0"] = (["left", "right"], np.array([3.0, 0.0]))
    p = agent.low.probs(("s0", "any subgoal"), ["left", "right"])
    np.testing.assert_allclose(p, np.exp([3.0, 0.0]) / np.exp([3.0, 0.0]).sum())


def test_subgoals_fall_back_to_action_verbs_and_need_admissible_actions():
    ctx = Context(
        task="t", observation="o", admissible_actions=["go north", "take key", "go south"]
    )
    assert subgoal_candidates(ctx) == ["go", "take"]
    with pytest.raises(ValueError, match="admissible"):
        HierTabularAgent().act([Context(task="t", observation="o", admissible_actions=None)])
