"""The agent contract: ``agent.act(contexts) -> list[Turn]`` for a batch of running episodes.

Envs and agents meet through data only: a `Context` holds strings, lists and small dicts, never
the env object, so the env may live in another process. An agent that needs more than the
observation declares it in ``needs`` (a set of names from `AGENT_NEEDS`) and the rollout fills
the matching `Context` field:

- ``"expert_action"``: ``Context.expert_action`` is the env's expert action
  (`TextEnv.expert_action`); the rollout refuses an env without an expert at start.

`check_format` tells whether an agent output format writes the action syntax an env parses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: What an agent may declare in ``needs``.
AGENT_NEEDS = frozenset({"expert_action"})

#: The env action syntax (`TextEnv.action_syntax`) each agent output format writes.
FORMAT_SYNTAX = {"action": "action", "search": "search", "tool": "tool", "hiper": "action"}


@dataclass
class Context:
    """What an agent sees for one running episode at one turn."""

    task: str
    observation: str
    admissible_actions: list[str] | None
    #: The previous (observation, action) pairs of this episode, oldest first.
    history: list[tuple[str, str]] = field(default_factory=list)
    state_key: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    env_id: str = ""
    #: Prompt-template family of the env ("alfworld", "webshop", "search", ... or "generic").
    family: str = "generic"
    #: Index of the episode in the rollout batch (group * G + member).
    episode: int = 0
    step: int = 0
    #: The env's expert action in this state (None: the expert has nothing to do); filled only
    #: for agents whose ``needs`` include "expert_action".
    expert_action: str | None = None
    #: The env's action space as data, ``{"min_length", "max_length", "charset"}``.
    action_space: dict[str, Any] | None = None


@dataclass
class Turn:
    """An agent's output for one context."""

    #: The action string sent to the env.
    action: str
    #: Raw generated text (equal to `action` for non-LLM agents).
    text: str = ""
    #: Whether the output followed the required format (the env still decides validity).
    format_ok: bool = True
    prompt_ids: Sequence[int] | None = None
    response_ids: Sequence[int] | None = None
    logprobs: Sequence[float] | None = None
    spans: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Agent(Protocol):
    """``act`` is required; an agent may also set ``needs`` (a subset of `AGENT_NEEDS`)."""

    def act(self, contexts: Sequence[Context]) -> list[Turn]: ...


def agent_needs(agent: Any) -> frozenset[str]:
    """The agent's declared ``needs`` (empty when it declares none); unknown names are an error."""
    needs = frozenset(getattr(agent, "needs", ()) or ())
    unknown = needs - AGENT_NEEDS
    if unknown:
        raise ValueError(
            f"{type(agent).__name__} needs {sorted(unknown)}, which no rollout provides; "
            f"known: {sorted(AGENT_NEEDS)}"
        )
    return needs


def _action_syntax(env: Any) -> tuple[str, str | None]:
    """(name, action syntax) of an env id, `TextEnv` class or instance; None when unknown."""
    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    from creditgym.envs.base import TextEnv

    if isinstance(env, str):
        if ":" in env:  # "module:id", as gymnasium.make accepts: importing registers the id
            import importlib

            module, env = env.split(":", 1)
            importlib.import_module(module)
        creator = gymnasium.spec(env).entry_point
        if isinstance(creator, str):
            creator = load_env_creator(creator)
        name = env
    else:
        creator = env if isinstance(env, type) else type(env)
        name = getattr(env, "env_name", creator.__name__)
    if isinstance(creator, type) and issubclass(creator, TextEnv):
        return name, creator.action_syntax
    return name, None


def check_format(env: Any, output_format: str) -> None:
    """Raise ValueError when `output_format` does not write the action syntax `env` parses.

    `env` is a registered id, a `TextEnv` subclass or an instance. An env made by a factory
    function (not a class) cannot be checked without building it and passes.
    """
    if output_format not in FORMAT_SYNTAX:
        raise ValueError(
            f"unknown output_format {output_format!r}; choose one of {list(FORMAT_SYNTAX)}"
        )
    name, syntax = _action_syntax(env)
    wanted = FORMAT_SYNTAX[output_format]
    if syntax is not None and syntax != wanted:
        fits = [f for f, s in FORMAT_SYNTAX.items() if s == syntax]
        raise ValueError(
            f"{name} parses {syntax!r} actions, but output_format {output_format!r} writes "
            f"{wanted!r} actions; use output_format {' or '.join(repr(f) for f in fits)}"
        )
