"""Uniform random agent: an admissible action when the env lists them, else a random string."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from creditgym.agents.base import Context, Turn


class RandomAgent:
    """Picks uniformly among `admissible_actions`; samples the env's action space otherwise."""

    def __init__(self, seed: int | None = 0):
        self.rng = np.random.default_rng(seed)

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        turns = []
        for ctx in contexts:
            acts = ctx.admissible_actions
            if acts:
                action = acts[int(self.rng.integers(len(acts)))]
            elif ctx.env is not None:
                ctx.env.action_space.seed(int(self.rng.integers(2**31)))
                action = ctx.env.action_space.sample()
            else:
                action = ""
            turns.append(Turn(action=action, text=action))
        return turns
