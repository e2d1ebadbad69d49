"""Generation-backend contract: batched sampling that returns token ids and their log-probs.

Every backend (``hf``, ``vllm``, ``vllm-server``, ``openai``) takes already-tokenised prompts and
returns, per prompt, the sampled token ids and the log-probability of each under the sampling
policy. Trainers train on exactly these token ids (no decode/re-encode round trip).

A backend is built as ``factory(model_path, learner=..., **kwargs)`` (see `make_backend`):
``learner`` is the in-process learner or None. After every update the trainer calls
``sync_weights(learner)`` and each backend takes from the learner what it needs: ``hf`` shares
its module, the vLLM engine and server export the merged weights and reload them in place, an
OpenAI-compatible endpoint reloads through ``/collective_rpc``. The trainer never asks which
backend it holds.

Two optional class attributes: ``takes_sessions = True`` makes `creditgym.agents.llm.LLMAgent`
pass ``sessions=[(env_id, episode, step)]`` to ``generate`` (the replicas route an episode to
one server by it), and ``concurrent_generate = True`` says ``generate`` may be called from many
threads at once (asynchronous rollouts then send each episode's request on its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class SamplingConfig:
    """Sampling options shared by every backend."""

    #: Softmax temperature (1.0 samples from the policy the learner trains).
    temperature: float = 1.0
    #: Nucleus sampling mass (1.0 = off; anything else makes log-probs differ from the policy's).
    top_p: float = 1.0
    #: Maximum number of generated tokens per turn.
    max_new_tokens: int = 64
    #: Generation stops after any of these strings (kept in the output).
    stop: tuple[str, ...] = ()
    #: Seed for reproducible sampling (None: nondeterministic).
    seed: int | None = None
    #: A JSON schema the output must match (structured outputs). Only the in-process ``vllm``
    #: backend can constrain decoding; the others refuse the request. The constraint changes the
    #: distribution sampled from, so the returned log-probs (those of the masked distribution) are
    #: not the policy's.
    json_schema: dict[str, Any] | None = None


@dataclass
class Generation:
    """One sampled completion."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    #: "stop" (EOS or a stop string) or "length" (hit max_new_tokens).
    finish_reason: str = "stop"
    extras: dict[str, Any] = field(default_factory=dict)


def prompt_seeds(seed: int | None, call: int, n: int) -> list[int | None]:
    """Distinct, reproducible per-prompt seeds for call number ``call`` (None: no seeding)."""
    if seed is None:
        return [None] * n
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, call]).generate_state(n)
    return [int(s) & 0x7FFFFFFF for s in state]


def check_request(
    prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *, structured: bool = False
) -> None:
    """Reject requests no backend can serve, with the same message everywhere. A backend that
    can constrain decoding to a JSON schema passes ``structured=True``; the others refuse a
    request with ``json_schema`` set."""
    if sampling.json_schema is not None and not structured:
        raise ValueError(
            "this backend cannot constrain decoding to a JSON schema (SamplingConfig.json_schema); "
            "use backend.name=vllm"
        )
    if sampling.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")


@runtime_checkable
class Backend(Protocol):
    #: False for endpoints that cannot return sampled token ids (evaluation only).
    supports_training: bool

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig
    ) -> list[Generation]: ...

    def sync_weights(self, learner: Any) -> float:
        """Load the learner's current weights; return the seconds it took.

        ``learner`` is the `Learner` (the built-in backends also take a torch module or, for the
        engines, a folder of safetensors)."""
        ...

    def close(self) -> None: ...
