"""The engine backend (`backend="textworld"`): alfworld's own TextWorld/PDDL engine.

A game is played exactly as alfworld's `AlfredTWEnv` plays it: TextWorld's `PddlEnv` with
alfworld's `AlfredDemangler` (entity names) and `AlfredInfos` wrappers, the `alfred.pddl` domain
and `alfred.twl2` grammar carried in the game file. The only addition is a cache of Fast
Downward's PDDL-to-SAS translation keyed by (domain, problem): TextWorld re-translates the same
problem at every reset (about 1 s for a kitchen), which dominated episode time; the translation
is a pure function of its inputs, so reusing it changes nothing else.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path
from typing import Any

from creditgym.envs.alfworld.fast import DYNAMIC_PREDICATES, NOTHING_HAPPENS, state_key

_PATCH_LOCK = threading.Lock()
_PATCHED = False


def _install_translation_cache() -> None:
    global _PATCHED
    with _PATCH_LOCK:
        if _PATCHED:
            return
        import fast_downward
        from textworld.envs.pddl import logic as pddl_logic

        original = fast_downward.pddl2sas

        @functools.lru_cache(maxsize=64)
        def cached(domain: str, problem: str, verbose: bool = False, optimize: bool = False):
            return original(domain, problem, verbose=verbose, optimize=optimize)

        def pddl2sas(domain, problem, verbose=False, optimize=False):
            return cached(domain, problem, bool(verbose), bool(optimize))

        pddl_logic.fast_downward.pddl2sas = pddl2sas
        _PATCHED = True


class EngineAlfred:
    """One ALFWorld game in TextWorld's PDDL engine; the same interface as `FastAlfred`."""

    def __init__(self, game_file: str | Path, expert: bool = False):
        try:
            import textworld
            from alfworld.agents.environment.alfred_tw_env import (
                AlfredDemangler,
                AlfredExpert,
                AlfredInfos,
            )
            from textworld.envs.pddl import PddlEnv
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "backend='textworld' needs alfworld and textworld[pddl]: run `make install`"
            ) from exc
        _install_translation_cache()

        class _PddlEnv(PddlEnv):
            """TextWorld's PddlEnv, reading the game file with a closed handle (its own `load`
            leaves the file open, a ResourceWarning per game)."""

            def load(self, filename_or_data):  # noqa: ANN001 - TextWorld's signature
                if isinstance(filename_or_data, (str, os.PathLike)):
                    with open(filename_or_data) as f:
                        data = json.load(f)
                    super().load(data)
                    self._game_file = str(filename_or_data)
                else:
                    super().load(filename_or_data)

        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True)
        env = AlfredInfos(AlfredDemangler(_PddlEnv(infos)))
        if expert:
            env = AlfredExpert(env)
        self._env = env
        self._env.load(str(game_file))
        self.game_file = str(game_file)
        self.state: Any = None

    def reset(self) -> str:
        self.state = self._env.reset()
        return self.state["feedback"]

    def step(self, command: str) -> str:
        self.state, _, _ = self._env.step(command)
        return self.state["feedback"]

    def admissible_commands(self) -> list[str]:
        return list(self.state["admissible_commands"])

    def won(self) -> bool:
        return bool(self.state["won"])

    def expert_plan(self) -> list[str]:
        """alfworld's handcoded expert's next action (needs `expert=True`)."""
        return list(self.state.get("extra.expert_plan") or [])

    def planner_plan(self) -> list[str]:
        """A plan from the current state by Fast Downward (alfworld's "planner" expert).

        This is what `AlfredExpert(expert_type="planner")` reads from TextWorld's
        `policy_commands`, computed once here instead of at every step.
        """
        env = self._env
        while not hasattr(env, "_pddl_state"):
            env = env._wrapped_env
        return list(env._pddl_state.replan(env._entity_infos))

    def facts(self) -> list[str]:
        out = []
        for fact in self.state["_facts"]:
            if fact.name in DYNAMIC_PREDICATES:
                out.append(f"{fact.name}({', '.join(v.name for v in fact.arguments)})")
        return sorted(out)

    def state_key(self) -> str:
        return state_key(self.facts())


__all__ = ["EngineAlfred", "NOTHING_HAPPENS"]
