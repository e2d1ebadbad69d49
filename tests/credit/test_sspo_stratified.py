"""Hand tests of Single-stream PO (module + value tracker) and Stratified GRPO, with the
arithmetic of shared/ALGORITHMS-2.md written out."""

import math

import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers.trackers import SSPOValueTracker, task_key
from tests.credit.helpers import group, traj


def _one(ret, task, baseline=None):
    t = traj([("s", "a", ret)])
    if baseline is not None:
        t.info["task_baseline"] = baseline
    return group(t, task_id=task)


def test_sspo_hand_example_advantage_and_tracker_update():
    # task a: S=4, N=8 (v=0.5), R=1 -> A=0.5; task b: v=0.75, R=0.5 -> A=-0.25
    tracker = SSPOValueTracker()
    ga, gb = _one(1.0, "a"), _one(0.5, "b")
    tracker.stats[task_key(ga)] = [4.0, 8.0]
    tracker.stats[task_key(gb)] = [6.0, 8.0]
    tracker.before_credit([ga, gb], None)
    assert ga.trajectories[0].info["task_baseline"] == 0.5
    assert gb.trajectories[0].info["task_baseline"] == 0.75
    raw = credit.make("sspo", normalize=False)([ga, gb]).values
    np.testing.assert_allclose(raw, [0.5, -0.25])
    # batch [0.5, -0.25]: mean 0.125, sample std sqrt((0.375^2 * 2) / 1) = 0.5303
    sd = math.sqrt(2 * 0.375**2)
    assert sd == pytest.approx(0.5303, abs=1e-4)
    adv = credit.make("sspo")([ga, gb]).values
    np.testing.assert_allclose(adv, [0.375 / (sd + 1e-8), -0.375 / (sd + 1e-8)])
    np.testing.assert_allclose(adv, [0.7071, -0.7071], atol=1e-4)
    # D = 0.06 -> rho = 2^-1 = 0.5 -> clamped to 0.875: S = 0.875*4 + 1 = 4.5, N = 0.875*8 + 1 = 8
    assert tracker.rho(0.06) == 0.875
    tracker.update(task_key(ga), [1.0], drift=0.06)
    assert tracker.stats[task_key(ga)] == [4.5, 8.0]
    assert tracker.value(task_key(ga)) == pytest.approx(0.5625)


def test_sspo_rho_clip_and_duplicates():
    tr = SSPOValueTracker()
    assert tr.rho(0.0) == 0.96  # 2^0 = 1 clipped to rho_max
    assert tr.rho(0.01) == pytest.approx(2 ** (-0.01 / 0.06))
    # two samples of one new task: decay once, add both (prior S = 0.5, N = 1)
    tr.update("x", [1.0, 0.0], drift=0.0)
    assert tr.stats["x"] == pytest.approx([0.96 * 0.5 + 1.0, 0.96 * 1 + 2])
    last = SSPOValueTracker(duplicates="last")
    last.update("x", [1.0, 0.0], drift=0.0)  # the ref: the last sample's write wins
    assert last.stats["x"] == pytest.approx([0.96 * 0.5 + 0.0, 0.96 * 1 + 1])


def test_sspo_drift_measured_on_the_last_stored_sample():
    class Table:  # a two-action softmax state whose logits the test moves
        def __init__(self):
            self.logits = np.zeros(2)

        def probs(self, key, acts):
            z = np.exp(self.logits)
            return z / z.sum()

    class Ctx:
        agent = Table()

    ctx = Ctx()
    t = Trajectory(steps=[Step("s", "a", 1.0, admissible_actions=["a", "b"])], won=True)
    g = TrajectoryGroup([t], task_id="x")
    tr = SSPOValueTracker(drift="kl")
    tr.after_update([g], None, ctx)  # first visit: D = 0, stores log pi(a|s) = log 0.5
    assert tr.last_rho[task_key(g)] == 0.96
    ctx.agent.logits = np.array([0.1, 0.0])  # the policy moved
    d = abs(math.log(math.exp(0.1) / (math.exp(0.1) + 1)) - math.log(0.5))
    assert tr.drift(task_key(g), ctx.agent) == pytest.approx(d)
    tr.after_update([g], None, ctx)
    assert tr.last_rho[task_key(g)] == pytest.approx(max(2 ** (-d / 0.06), 0.875))


def test_sspo_refuses_without_a_tracker():
    with pytest.raises(ValueError, match="tracker"):
        credit.make("sspo")([_one(1.0, "a")])


def test_tracker_state_round_trip():
    tr = SSPOValueTracker()
    tr.update("k", [1.0], 0.03)
    tr.stored["k"] = ([("s", ["a", "b"], "a")], [-0.69])
    other = SSPOValueTracker()
    other.load_state_dict(tr.state_dict())
    assert other.stats == tr.stats and other.stored == tr.stored


def _search_traj(n_search, ret):
    steps = [Step(f"s{i}", "<search>q</search>", 0.0) for i in range(n_search)]
    steps.append(Step("s", "<answer>x</answer>", ret))
    return Trajectory(steps=steps, won=ret > 0)


def test_stratified_grpo_hand_example():
    # R = [1, 0 | 1, 1], strata {1 search, 1 search | 2, 2}
    g = TrajectoryGroup(
        [_search_traj(1, 1.0), _search_traj(1, 0.0), _search_traj(2, 1.0), _search_traj(2, 1.0)],
        task_id="q",
        env_id="creditgym/SearchDiscrete-v0",
    )
    adv = credit.make("stratified_grpo")([g]).per_trajectory([g])[0]
    first = [float(a[0]) for a in adv]
    # SAN: [1, 0] -> mean 0.5, sample std 0.7071 -> +-0.7071; tied stratum [1, 1] -> 0
    # GN: mean 0.75, sample std 0.5 -> [0.5, -1.5, 0.5, 0.5]
    # 0.6 SAN + 0.4 GN = [0.4243 + 0.2, -0.4243 - 0.6, 0.2, 0.2]
    np.testing.assert_allclose(first, [0.6243, -1.0243, 0.2, 0.2], atol=1e-4)
    for a in adv:  # every step of a trajectory gets its value
        assert np.all(a == a[0])
    grpo = credit.make("stratified_grpo", alpha=0.0)([g]).values
    np.testing.assert_allclose(grpo, credit.make("grpo")([g]).values)


def test_stratified_grpo_strata_by_steps_outside_search():
    g = group(traj([("a", "x", 1.0)]), traj([("a", "x", 0.0), ("b", "y", 0.0)]))
    san = credit.make("stratified_grpo", alpha=1.0)([g]).values
    np.testing.assert_allclose(san, 0.0)  # two strata of one trajectory each
    custom = credit.make("stratified_grpo", alpha=1.0, stratum=lambda t: 0)([g]).values
    np.testing.assert_allclose(custom, credit.make("grpo")([g]).values)
    with pytest.raises(ValueError, match="stratum"):
        credit.make("stratified_grpo", stratum="bogus")
