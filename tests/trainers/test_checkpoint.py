"""Checkpoints: atomic folders, RNG states restored exactly, the task-panel walk resumes."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from creditgym.trainers.checkpoint import (
    TaskSampler,
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draw()
    save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, {"sampler": {}})
    expected = _draw()
    _draw()  # move every generator on
    ckpt = load_checkpoint(latest_checkpoint(tmp_path))
    set_rng_state(ckpt.rng)
    assert _draw() == expected
    assert torch.equal(ckpt.learner["w"], torch.ones(2))
    assert ckpt.iteration == 1


def test_get_set_rng_state_in_memory() -> None:
    state = get_rng_state()
    a = _draw()
    set_rng_state(state)
    assert _draw() == a


def test_keeps_the_newest_and_points_latest_at_it(tmp_path: Path) -> None:
    for k in (1, 2, 3, 4):
        save_checkpoint(tmp_path, k, {"k": k}, {"it": k}, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert names == ["iter_000003", "iter_000004"]
    assert latest_checkpoint(tmp_path).name == "iter_000004"
    assert load_checkpoint(latest_checkpoint(tmp_path)).loop == {"it": 4}


def test_incomplete_checkpoints_are_never_picked(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"k": 1}, {})
    # A run killed while writing iteration 2 leaves a temp folder and maybe a stale pointer.
    (tmp_path / ".tmp-iter_000002-99").mkdir()
    (tmp_path / ".tmp-iter_000002-99" / "learner.pt").write_bytes(b"torn")
    half = tmp_path / "iter_000002"
    half.mkdir()
    (half / "learner.pt").write_bytes(b"torn")
    (tmp_path / "latest").write_text("iter_000002")
    assert latest_checkpoint(tmp_path).name == "iter_000001"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_task_sampler_walks_passes_and_resumes() -> None:
    a = TaskSampler(5, seed=7)
    first = a.next(3) + a.next(3) + a.next(4)
    assert sorted(first[:5]) == list(range(5))  # one full pass visits every task once
    assert sorted(first[5:]) == list(range(5))
    b = TaskSampler(5, seed=7)
    b.next(3)
    c = TaskSampler(5, seed=0)
    c.load_state_dict(b.state_dict())
    assert c.next(7) == first[3:]
    with pytest.raises(ValueError, match="tasks"):
        TaskSampler(6, seed=7).load_state_dict(b.state_dict())
    assert (
        TaskSampler(5, seed=8).next(5) != first[:5] or TaskSampler(5, seed=9).next(5) != first[:5]
    )
