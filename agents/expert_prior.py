"""Tabular agents whose start policy leans towards an env's expert: the credit benchmark's prior
on envs without a finite model (ALFWorld), where a uniform start almost never wins.

A state the agent has not seen starts with logits ``beta * onehot(expert action)`` over its
admissible actions instead of zeros (no bonus when the expert has no action there or proposes
an inadmissible one). The agent declares ``needs = {"expert_action"}``, so rollouts fill
``Context.expert_action``, and it writes the prior entry into its table the first time it acts
in a state; the policy is therefore a fixed function of the state before any update, whichever
rollout (training, evaluation or MC continuation) visits the state first. beta = 0 is the
plain agent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from creditgym.agents.base import Context, Turn
from creditgym.agents.hier_tabular import HierTabularAgent
from creditgym.agents.tabular import TabularSoftmaxAgent

__all__ = ["ExpertPriorHierTabularAgent", "ExpertPriorTabularAgent"]


class _ExpertPrior:
    needs = frozenset({"expert_action"})
    table: dict[str, tuple[list[str], np.ndarray]]

    def _seed_prior(self, contexts: Sequence[Context]) -> None:
        for ctx in contexts:
            acts = ctx.admissible_actions
            if not acts or ctx.state_key in self.table:
                continue
            logits = np.zeros(len(acts))
            if self.prior_beta and ctx.expert_action in acts:
                logits[list(acts).index(ctx.expert_action)] = self.prior_beta
            self.table[ctx.state_key] = (list(acts), logits)

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        self._seed_prior(contexts)
        return super().act(contexts)  # type: ignore[misc]


class ExpertPriorTabularAgent(_ExpertPrior, TabularSoftmaxAgent):
    """`TabularSoftmaxAgent` starting from logit `prior_beta` on the expert's action."""

    def __init__(self, prior_beta: float, lr: float = 1.0, seed: int | None = 0, greedy=False):
        if prior_beta < 0:
            raise ValueError(f"prior_beta must be >= 0, got {prior_beta}")
        super().__init__(lr=lr, seed=seed, greedy=greedy)
        self.prior_beta = float(prior_beta)


class ExpertPriorHierTabularAgent(_ExpertPrior, HierTabularAgent):
    """`HierTabularAgent` whose shared action logits start at `prior_beta` on the expert's
    action (every subgoal's low-level policy reads them)."""

    def __init__(self, prior_beta: float, lr: float = 1.0, seed: int | None = 0, greedy=False):
        if prior_beta < 0:
            raise ValueError(f"prior_beta must be >= 0, got {prior_beta}")
        super().__init__(lr=lr, seed=seed, greedy=greedy)
        self.prior_beta = float(prior_beta)
