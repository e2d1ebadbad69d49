"""Oracle agent: asks the env for its expert action (`env.expert_action()`)."""

from __future__ import annotations

from collections.abc import Sequence

from creditgym.agents.base import Context, Turn


class OracleAgent:
    """Plays the env's own expert policy; an upper bound in benchmarks and a test harness."""

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        turns = []
        for ctx in contexts:
            expert = getattr(ctx.env, "expert_action", None)
            if expert is None:
                raise TypeError(
                    f"{ctx.env_id} has no expert: its env class must implement expert_action()"
                )
            action = expert()
            if action is None:
                action = "look"  # the expert has nothing to do: a harmless no-op turn
            turns.append(Turn(action=action, text=action))
        return turns
