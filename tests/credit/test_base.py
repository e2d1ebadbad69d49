"""The shared credit helpers: batch statistics and their reducer, Advantages' mask and weight, and
the value heads each module declares."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.base import (
    READ_POSITIONS,
    Advantages,
    batch_stats,
    set_reducer,
    whiten,
)
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup


def test_batch_stats_equal_numpy_bit_for_bit() -> None:
    x = np.random.default_rng(0).normal(size=101) * 3.0 + 1.0
    s = batch_stats(x)
    assert (s.count, s.mean, s.min, s.max) == (101, x.mean(), x.min(), x.max())
    assert s.std() == x.std()
    assert s.std(ddof=1) == pytest.approx(x.std(ddof=1), rel=1e-12)
    mask = x > 0.5
    m = batch_stats(x, mask)
    assert (m.count, m.mean, m.std()) == (int(mask.sum()), x[mask].mean(), x[mask].std())
    empty = batch_stats(np.zeros(0))
    assert (empty.count, empty.mean, empty.m2, empty.min, empty.max) == (
        0,
        0.0,
        0.0,
        np.inf,
        -np.inf,
    )


def test_whiten_by_hand_and_with_a_mask() -> None:
    # [1, 2, 3]: mean 2, population std sqrt(2/3)
    z = whiten(np.array([1.0, 2.0, 3.0]))
    assert z == pytest.approx(np.array([-1.0, 0.0, 1.0]) / (np.sqrt(2.0 / 3.0) + 1e-6))
    assert whiten(np.array([4.0])).tolist() == [0.0]  # one element gives 0
    x = np.array([1.0, np.nan, 3.0, 100.0])
    zm = whiten(x, np.array([True, False, True, False]))
    assert zm == pytest.approx([-1.0 / (1.0 + 1e-6), 0.0, 1.0 / (1.0 + 1e-6), 0.0])


class _ThreadAllReduce:
    """An all-reduce over threads (one thread per simulated rank), used as the reducer."""

    def __init__(self, ranks: int):
        self.barrier = threading.Barrier(ranks)
        self.slots: list[np.ndarray | None] = [None] * ranks
        self.local = threading.local()
        self.calls = 0

    def __call__(self, partials: np.ndarray, op: str) -> np.ndarray:
        rank = self.local.rank
        self.slots[rank] = np.array(partials, dtype=np.float64)
        self.barrier.wait()
        stacked = np.stack(self.slots)
        out = stacked.sum(0) if op == "sum" else stacked.max(0)
        self.barrier.wait()  # everyone has read the slots before they are reused
        if rank == 0:
            self.calls += 1
        return out


def _run_ranks(reducer: _ThreadAllReduce, fn, shards: list) -> list:
    results: list = [None] * len(shards)
    errors: list[BaseException] = []

    def work(rank: int) -> None:
        reducer.local.rank = rank
        try:
            results[rank] = fn(shards[rank])
        except BaseException as e:  # surfaced below
            errors.append(e)
            reducer.barrier.abort()

    previous = set_reducer(reducer)
    try:
        threads = [threading.Thread(target=work, args=(r,)) for r in range(len(shards))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        set_reducer(previous)
    if errors:
        raise errors[0]
    return results


def _groups(seed: int, n: int) -> list[TrajectoryGroup]:
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n):
        trajs = []
        for _ in range(3):
            steps = []
            length = int(rng.integers(1, 5))
            for t in range(length):
                steps.append(
                    Step(
                        state_key=f"s{rng.integers(3)}",
                        action="a",
                        reward=float(rng.integers(0, 2)) if t == length - 1 else 0.0,
                        values={h: float(rng.normal()) for h in ("v", "high", "low", "term")},
                        entropies=rng.random(3),
                        extras={"switch": "SWITCH" if rng.random() < 0.5 else "KEEP"},
                    )
                )
            trajs.append(Trajectory(steps=steps))
        out.append(TrajectoryGroup(trajectories=trajs, task_id=f"t{g}"))
    return out


@pytest.mark.parametrize(
    "name,options", [("ppo", {}), ("hiper", {}), ("empg", {"base": "ppo"}), ("empg", {})]
)
def test_batch_statistics_all_reduce_through_the_reducer(name: str, options: dict) -> None:
    """Two simulated ranks, each with half of the groups, give the one-process advantages."""
    groups = _groups(1, 6)
    module = credit.make(name, **options)
    whole = module(groups)
    reducer = _ThreadAllReduce(2)
    halves = _run_ranks(reducer, module, [groups[:3], groups[3:]])
    assert reducer.calls > 0
    joined = np.concatenate([h.values for h in halves])
    assert joined == pytest.approx(whole.values, abs=1e-9)
    if whole.spans:
        for span, v in whole.spans.items():
            assert np.concatenate([h.spans[span] for h in halves]) == pytest.approx(v, abs=1e-9)
    # Without the reducer each half would use its own statistics: different numbers.
    local = np.concatenate([module(groups[:3]).values, module(groups[3:]).values])
    assert np.abs(local - whole.values).max() > 1e-3


def test_a_rank_with_no_steps_still_takes_part() -> None:
    groups = _groups(2, 2)
    module = credit.make("hiper")
    reducer = _ThreadAllReduce(2)
    full, empty = _run_ranks(reducer, module, [groups, []])
    assert len(empty.values) == 0
    assert full.values == pytest.approx(module(groups).values, abs=1e-12)


def test_advantages_mask_and_weight_are_checked() -> None:
    adv = Advantages(values=np.zeros(3), mask=np.array([True, False, True]))
    assert adv.step_mask().tolist() == [True, False, True]
    assert adv.step_weight().tolist() == [1.0, 1.0, 1.0]
    adv.check(3)
    with pytest.raises(ValueError, match="mask has 2 entries for 3 steps"):
        Advantages(values=np.zeros(3), mask=np.array([True, False])).check(3)
    with pytest.raises(ValueError, match="weight must be finite"):
        Advantages(values=np.zeros(2), weight=np.array([1.0, np.inf])).check(2)
    # Only SPO-tree masks steps (those on no sampled edge leave the loss); every other module
    # returns neither. IGPO needs answer log-probs and SSPO a tracker's baseline, which these
    # groups lack.
    lacking = {"answer_logprobs", "task_baseline"}
    names = [n for n in credit.available() if not lacking & set(credit.make(n).needs)]
    assert {"gigpo", "hiper", "spo_tree", "r3l"} <= set(names)
    for name in names:
        out = credit.make(name)(_groups(3, 2))
        assert out.weight is None, name
        assert (out.mask is not None) == (name == "spo_tree"), name


def test_modules_declare_their_value_heads() -> None:
    assert credit.make("ppo").value_heads == {"v": "last_prompt_token"}
    assert credit.make("ppo", head="critic").value_heads == {"critic": "last_prompt_token"}
    assert credit.make("hiper").value_heads == {
        "high": "last_prompt_token",
        "low": "subgoal_end",
        "term": "last_prompt_token",
    }
    assert credit.make("hiper", values="group").value_heads == {}
    assert credit.make("empg", base="ppo").value_heads == {"v": "last_prompt_token"}
    for name in credit.available():
        module = credit.make(name)
        # A module reads values exactly when it declares heads, at known positions.
        assert bool(module.value_heads) == ("values" in module.needs), name
        assert set(module.value_heads.values()) <= set(READ_POSITIONS)
