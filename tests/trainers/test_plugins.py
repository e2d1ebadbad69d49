"""Hand tests of issue 19's plug-ins (ARPO replay, DUMP, SSPO's sampler, EPO's term) with the
arithmetic of shared/ALGORITHMS-2.md, and the config-time refusals of impossible combinations."""

import math

import numpy as np
import pytest
import torch

from creditgym import credit
from creditgym.credit.trajectory import TrajectoryGroup
from creditgym.trainers import buffers, recipes, samplers, trackers
from creditgym.trainers.config import TrainConfig
from creditgym.trainers.curricula import dump_scores
from creditgym.trainers.epo import EPOTerm, beta_k, smoothing_penalty
from creditgym.trainers.loss import TokenBatch
from creditgym.trainers.plugins import check_combination, compose
from tests.credit.helpers import group, traj


def _win(r=1.0):
    return traj([("s", "go", r)])


def _lose():
    return traj([("s", "stay", 0.0)])


def test_arpo_hand_example():
    buf = buffers.make("arpo_replay")
    # a group [1, 0, 0, 0] of its own is left alone; its success enters the buffer
    g0 = group(_win(), _lose(), _lose(), _lose(), task_id="t")
    out = buf.before_credit([g0], None)
    assert out[0] is g0 and len(buf.store[trackers.task_key(g0)]) == 1
    # later an all-failing group [0, 0, 0, 0] gets the stored success in place of its first
    g1 = group(_lose(), _lose(), _lose(), _lose(), task_id="t")
    (new,) = buf.before_credit([g1], None)
    assert [t.won for t in new.trajectories] == [True, False, False, False]
    assert new.trajectories[0].info["role"] == "replayed" and len(new) == 4
    assert len(buf.store[trackers.task_key(g1)]) == 1  # the replayed one is not re-added
    # GRPO on [1, 0, 0, 0]: mean 0.25, sample std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    adv = credit.make("grpo")([new]).values
    np.testing.assert_allclose(adv, [1.5, -0.5, -0.5, -0.5], atol=1e-5)
    # another task's failing group finds nothing to replay
    g2 = group(_lose(), _lose(), task_id="other")
    assert buf.before_credit([g2], None)[0] is g2


def test_arpo_fifo_threshold_rule_and_state():
    buf = buffers.make("arpo_replay", capacity=2, seed=5)
    for r in (1.0, 2.0, 3.0):
        buf.before_credit([group(_win(r), _lose(), task_id="t")], None)
    kept = [t.steps[0].reward for t in buf.store["|train|t"]]
    assert kept == [2.0, 3.0]  # FIFO of size 2
    # the ref's rule: std < 0.05 and mean < 0.2 (returns / scale)
    assert buf._all_negative(group(_lose(), _lose()))
    assert not buf._all_negative(group(_win(), _lose()))
    other = buffers.make("arpo_replay")
    other.load_state_dict(buf.state_dict())
    assert other.draws == buf.draws and len(other.store["|train|t"]) == 2
    with pytest.raises(ValueError, match="rule"):
        buffers.make("arpo_replay", rule="nope")


def test_dump_hand_example():
    # L = (0.4, 0.1), n = (100, 50): bonus sqrt(2 ln 151 / 101) = 0.3152, sqrt(2 ln 151 / 51) = 0.4436
    ucb, p = dump_scores([0.4, 0.1], [100, 50], tau=0.1)
    assert math.sqrt(2 * math.log(151) / 101) == pytest.approx(0.3152, abs=1e-4)
    np.testing.assert_allclose(ucb, [0.7152, 0.5436], atol=1e-4)
    # softmax((0.7152, 0.5436) / 0.1) = 1 / (1 + e^-1.716) = 0.8476
    np.testing.assert_allclose(p, [0.8476, 0.1524], atol=1e-4)


def test_dump_sampler_learns_from_advantages():
    s = samplers.make("dump", num_tasks=4, seed=0, task_types=["a", "a", "b", "b"])
    np.testing.assert_allclose(s.probabilities(), [0.5, 0.5])  # uniform before any sample
    ga = group(_win(), _lose(), task_id="0")
    for t in ga.trajectories:
        t.task_type = "a"
    gb = group(_lose(), _lose(), task_id="2")
    for t in gb.trajectories:
        t.task_type = "b"
    adv = credit.Advantages(values=np.array([1.0, -1.0, 0.0, 0.0]))
    s.after_credit([ga, gb], adv, None)
    assert s.samples == {"a": [1.0, -1.0], "b": [0.0, 0.0]} and s.counts == {"a": 2, "b": 2}
    p = s.probabilities()
    assert p[0] > 0.99  # L = (1, 0), equal counts: softmax(10 * (1, 0))
    picks = s.next(20)
    assert set(picks) <= {0, 1, 2, 3} and sum(i < 2 for i in picks) >= 18
    again = samplers.make("dump", num_tasks=4, seed=0)
    again.load_state_dict(s.state_dict())
    assert again.next(5) == s.next(5)  # same state -> same draws
    assert again.state_dict()["samples"] == s.state_dict()["samples"]


def test_sspo_priority_weights():
    s = samplers.make("sspo_priority", num_tasks=3, seed=0)
    # prior v = 0.5, N = 1: w = sqrt(0.25) + 0.05 = 0.55 for every task (gamma = 0)
    np.testing.assert_allclose(s.weights(), [0.55, 0.55, 0.55])

    class Batch:
        groups = [group(_win(), _win()), group(_lose(), _lose())]

    s.observe([0, 1], Batch())
    # task 0: S = 0.96 * 0.5 + 2 = 2.48, N = 0.96 + 2 = 2.96 -> v = 0.8378
    v0 = 2.48 / 2.96
    w = s.weights()
    assert w[0] == pytest.approx(math.sqrt(v0 * (1 - v0)) + 0.05)
    assert w[1] == pytest.approx(math.sqrt((0.48 / 2.96) * (1 - 0.48 / 2.96)) + 0.05)
    assert w[2] == pytest.approx(0.55)
    g = samplers.make("sspo_priority", num_tasks=3, seed=0, gamma=1.0)
    np.testing.assert_allclose(g.weights(), [0.55, 0.55, 0.55])  # N = 1
    assert len(set(s.next(3))) == 3  # B <= pool: without replacement


def test_epo_hand_example_and_gradient():
    # Hbar_W = 1.0, kappa = (0, 2), alpha 0.1, entropies [0.5, 2.5, 3.0] -> P = [0, 0.5, 1.0]
    h = torch.tensor([0.5, 2.5, 3.0], requires_grad=True)
    p = smoothing_penalty(h, 1.0, 0.0, 2.0)
    np.testing.assert_allclose(p.detach().numpy(), [0.0, 0.5, 1.0])
    assert float((0.1 * p).mean().detach()) == pytest.approx(0.05)  # the turn's alpha P mean
    p.sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), [0.0, 1.0, 1.0])  # dP/dH
    assert beta_k(5, 10) == pytest.approx(1 + math.exp(-3))  # k = k_mid: 1.0498
    assert beta_k(0, 10) == 2.0

    def batch(ent):
        n = len(ent)
        return TokenBatch(
            logp=torch.zeros(n), old_logp=torch.zeros(n), advantages=torch.zeros(n),
            mask=torch.ones(n), weight=torch.ones(n), denominator=n, entropy=ent,
        )  # fmt: skip

    term = EPOTerm(coef=0.001, alpha=0.1, total_iterations=10)
    ent = torch.tensor([0.5, 2.5, 3.0], requires_grad=True)
    out = term(batch(ent))  # empty history: L = -lambda mean(H)
    assert float(out.loss) == pytest.approx(-0.001 * 2.0)
    term.history = [1.0]  # k = 1, Hbar_W = 1
    ent = torch.tensor([0.5, 2.5, 3.0], requires_grad=True)
    out = term(batch(ent))
    b = 1 + math.exp(-3 * 1 / 5)
    assert float(out.loss) == pytest.approx(-0.001 * 2.0 + 0.001 * b * 0.05)
    out.loss.backward()
    np.testing.assert_allclose(
        ent.grad.numpy(), (-0.001 + 0.001 * b * 0.1 * np.array([0, 1, 1])) / 3, rtol=1e-6
    )
    off = EPOTerm(smooth="off", total_iterations=10)
    off.history = [1.0]
    ent = torch.tensor([0.5, 2.5, 3.0], requires_grad=True)
    off(batch(ent)).loss.backward()  # the reference code's gradient: the entropy bonus only
    np.testing.assert_allclose(ent.grad.numpy(), [-0.001 / 3] * 3, rtol=1e-6)
    assert off.last["smooth"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="smooth"):
        EPOTerm(smooth="nope")


def test_epo_history_from_step_entropies():
    term = EPOTerm()
    g = group(traj([("s", "a", 0.0), ("t", "b", 1.0)]))
    g.trajectories[0].steps[0].entropies = np.array([1.0, 2.0])
    g.trajectories[0].steps[1].entropies = np.array([3.0])
    assert term.end_iteration([g]) == pytest.approx(2.0) and term.k == 1
    other = EPOTerm()
    other.load_state_dict(term.state_dict())
    assert other.history == [2.0]


def test_impossible_combinations_fail_at_config_time():
    with pytest.raises(ValueError, match="task_baseline"):
        TrainConfig(credit={"name": "sspo"})
    with pytest.raises(ValueError, match="groupless"):
        TrainConfig(
            credit={"name": "sspo"}, tracker={"name": "sspo_value"}, buffer={"name": "arpo_replay"}
        )
    with pytest.raises(ValueError, match="registered"):
        TrainConfig(buffer={"name": "replay"})
    with pytest.raises(ValueError, match="no option"):
        TrainConfig(buffer={"name": "arpo_replay", "options": {"size": 3}})
    with pytest.raises(ValueError, match="term_options"):
        TrainConfig(loss={"terms": ["kl"], "term_options": {"epo": {}}})
    ok = TrainConfig(credit={"name": "sspo"}, tracker={"name": "sspo_value"})
    assert ok.tracker.name == "sspo_value"
    # benchmark compositions: two samplers, or a groupless module with a group buffer
    with pytest.raises(ValueError, match="two samplers"):
        recipes.resolve("sspo+dump")
    with pytest.raises(ValueError, match="groupless"):
        recipes.resolve("sspo+arpo")
    r = compose("gigpo+arpo")
    assert (r.credit, r.buffer) == ("gigpo", "arpo_replay")
    check_combination("gigpo", {}, "dump", None, "arpo_replay")


def test_recipes_registered():
    assert recipes.resolve("sspo").tracker == "sspo_value"
    assert recipes.resolve("sspo").sampler == "sspo_priority"
    assert recipes.resolve("arpo").buffer == "arpo_replay"
    assert recipes.resolve("dump").sampler == "dump"
    assert recipes.resolve("stratified_grpo").credit == "stratified_grpo"
    assert isinstance(TrajectoryGroup(), TrajectoryGroup)


def test_readme_tracker_example_runs_with_sspo():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "register_tracker" in b
    )
    assert len(block.strip().splitlines()) <= 32
    trackers._TRACKERS.unregister("ema_baseline")
    try:
        exec(compile(block, "README", "exec"), {})
        cfg = TrainConfig(credit={"name": "sspo"}, tracker={"name": "ema_baseline"})
        tr = trackers.make(cfg.tracker.name, decay=0.5)
        g = group(_win(10.0), _lose(), task_id="t")
        tr.before_credit([g], None)  # first visit: baseline 0
        np.testing.assert_allclose(credit.make("sspo", normalize=False)([g]).values, [10.0, 0.0])
        tr.after_update([g], None, None)  # mean return 5 -> EMA 5
        tr.before_credit([g], None)
        np.testing.assert_allclose(credit.make("sspo", normalize=False)([g]).values, [5.0, -5.0])
        again = trackers.make("ema_baseline")
        again.load_state_dict(tr.state_dict())
        assert again.mean == tr.mean
    finally:
        trackers._TRACKERS.unregister("ema_baseline")
