"""The agent contract: ``agent.act(contexts) -> list[Turn]`` for a batch of running episodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


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
    #: The unwrapped env, for oracle agents that ask it for the expert action. Other agents
    #: must not touch it.
    env: Any = None


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
    def act(self, contexts: Sequence[Context]) -> list[Turn]: ...
