"""Tabular softmax policy over admissible actions, keyed by `state_key`.

pi(a | s) = softmax(theta[s])[a] over the admissible actions of s. `update` takes any credit
module's advantages and does one policy-gradient step:

    theta[s] += lr / N * sum_{steps at s} A_t * (onehot(a_t) - pi(. | s))

where N is the number of trajectories in the batch (the per-episode average of the summed
score-function gradient). Unseen states start uniform (theta = 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from creditgym.agents.base import Context, Turn
from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import TrajectoryGroup


class TabularSoftmaxAgent:
    """A softmax policy table trained from per-step advantages."""

    def __init__(self, lr: float = 1.0, seed: int | None = 0, greedy: bool = False):
        self.lr = float(lr)
        self.greedy = greedy
        self.rng = np.random.default_rng(seed)
        #: state_key -> (admissible actions, logits)
        self.table: dict[str, tuple[list[str], np.ndarray]] = {}

    def _entry(self, state_key: str, actions: Sequence[str]) -> tuple[list[str], np.ndarray]:
        entry = self.table.get(state_key)
        if entry is None:
            entry = (list(actions), np.zeros(len(actions)))
            self.table[state_key] = entry
        return entry

    def probs(self, state_key: str, actions: Sequence[str]) -> np.ndarray:
        """pi(. | s) over `actions` (the state's admissible actions)."""
        entry = self.table.get(state_key)
        if entry is None:
            return np.full(len(actions), 1.0 / len(actions))
        known, logits = entry
        if known != list(actions):
            index = {a: i for i, a in enumerate(known)}
            logits = np.array([logits[index[a]] if a in index else 0.0 for a in actions])
        z = np.exp(logits - logits.max())
        return z / z.sum()

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        turns = []
        for ctx in contexts:
            acts = ctx.admissible_actions
            if not acts:
                raise ValueError(
                    f"the tabular agent needs admissible actions; {ctx.env_id} gave none"
                )
            p = self.probs(ctx.state_key, acts)
            i = int(p.argmax()) if self.greedy else int(self.rng.choice(len(acts), p=p))
            turns.append(Turn(action=acts[i], text=acts[i]))
        return turns

    def update(self, groups: Sequence[TrajectoryGroup], advantages: Advantages) -> dict[str, float]:
        """One policy-gradient step from per-step advantages (flat (group, traj, step) order)."""
        n_traj = sum(len(g) for g in groups)
        if n_traj == 0:
            return {"grad_norm": 0.0}
        scale = self.lr / n_traj
        grads: dict[str, np.ndarray] = {}
        pos = 0
        for g in groups:
            for traj in g.trajectories:
                for step in traj.steps:
                    a = float(advantages.values[pos])
                    pos += 1
                    acts = step.admissible_actions
                    if not acts:
                        continue
                    actions, logits = self._entry(step.state_key, acts)
                    if step.action not in actions:
                        continue
                    p = np.exp(logits - logits.max())
                    p /= p.sum()
                    grad = grads.setdefault(step.state_key, np.zeros(len(actions)))
                    grad -= a * p
                    grad[actions.index(step.action)] += a
        norm = 0.0
        for key, grad in grads.items():
            self.table[key][1][:] += scale * grad
            norm += float(grad @ grad)
        return {"grad_norm": scale * norm**0.5, "states": float(len(self.table))}
