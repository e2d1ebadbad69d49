"""Uniform random agent: an admissible action when the env lists them, else a random string."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from creditgym.agents.base import Context, Turn


class RandomAgent:
    """Picks uniformly among `admissible_actions`; otherwise samples the env's action space,
    which it rebuilds from ``Context.action_space`` (data), seeded from its own generator."""

    def __init__(self, seed: int | None = 0):
        self.rng = np.random.default_rng(seed)
        self._spaces: dict[tuple[int, int, str], spaces.Text] = {}

    def _space(self, spec: dict[str, Any]) -> spaces.Text:
        key = (int(spec["min_length"]), int(spec["max_length"]), str(spec["charset"]))
        space = self._spaces.get(key)
        if space is None:
            space = spaces.Text(min_length=key[0], max_length=key[1], charset=key[2])
            self._spaces[key] = space
        return space

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        turns = []
        for ctx in contexts:
            acts = ctx.admissible_actions
            if acts:
                action = acts[int(self.rng.integers(len(acts)))]
            elif ctx.action_space is not None:
                space = self._space(ctx.action_space)
                space.seed(int(self.rng.integers(2**31)))
                action = space.sample()
            else:
                action = ""
            turns.append(Turn(action=action, text=action))
        return turns
