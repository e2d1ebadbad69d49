"""Seeding: the process-wide RNGs, forked RNG blocks, and the reset seeds of an iteration's groups."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from creditgym.trainers.checkpoint import get_rng_state, set_rng_state

__all__ = ["forked_rng", "group_seeds", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global RNG and torch's RNG with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextmanager
def forked_rng(seed: int) -> Iterator[None]:
    """Run a block with fresh seeded RNGs, then restore the previous states exactly."""
    saved = get_rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


def group_seeds(seed: int, iteration: int, count: int) -> list[int]:
    """Reset seeds of an iteration's groups: a pure function of (run seed, iteration, group)."""
    return [
        int(np.random.SeedSequence([seed, iteration, b]).generate_state(1)[0] % (2**31))
        for b in range(count)
    ]
