"""Oracle agent: plays the env's expert action, which the rollout hands it as data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from creditgym.agents.base import Context, Turn


class OracleAgent:
    """Plays the env's own expert policy; an upper bound in benchmarks and a test harness.

    It declares ``needs = {"expert_action"}``: the rollout asks the env for its expert action
    (`TextEnv.expert_action`) every turn and puts it in ``Context.expert_action``.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"expert_action"})

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        turns = []
        for ctx in contexts:
            action = ctx.expert_action
            if action is None:
                action = "look"  # the expert has nothing to do: a harmless no-op turn
            turns.append(Turn(action=action, text=action))
        return turns
