"""Recorded generations: `RecordingBackend` keeps what a backend sampled, `ReplayBackend` plays it
back, so two runs can be compared on the very same responses.

An LLM backend's samples may depend on how requests are batched (SCALE.md), so tests that compare
two ways of running the same rollouts (sync against async, one env backend against another)
record the responses of one run and replay them in the other. A generation is keyed by its
session ``(env_id, episode, step)`` (the agent passes it, see `creditgym.agents.backends.base`)
and its prompt token ids; identical keys are served in the order they were recorded. A prompt
the recording never saw is an error, so a replayed run that drifts from the recorded one stops
instead of silently sampling something else.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Hashable, Sequence
from typing import Any

from creditgym.agents.backends.base import Generation, SamplingConfig, check_request

__all__ = ["RecordingBackend", "ReplayBackend"]

Key = tuple[Hashable, tuple[int, ...]]


def _keys(prompts: Sequence[Sequence[int]], sessions: Sequence[Hashable] | None) -> list[Key]:
    if sessions is None:
        sessions = [None] * len(prompts)
    if len(sessions) != len(prompts):
        raise ValueError(f"{len(sessions)} sessions for {len(prompts)} prompts")
    return [(s, tuple(int(t) for t in p)) for s, p in zip(sessions, prompts)]


class RecordingBackend:
    """Wraps a backend and records every generation by (session, prompt) in ``records``."""

    takes_sessions = True

    def __init__(self, inner: Any):
        self.inner = inner
        self.records: dict[Key, list[Generation]] = defaultdict(list)
        self._lock = threading.Lock()

    @property
    def supports_training(self) -> bool:
        return bool(getattr(self.inner, "supports_training", True))

    @property
    def concurrent_generate(self) -> bool:
        return bool(getattr(self.inner, "concurrent_generate", False))

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        sessions: Sequence[Hashable] | None = None,
    ) -> list[Generation]:
        if getattr(self.inner, "takes_sessions", False):
            out = self.inner.generate(prompts, sampling, sessions=sessions)
        else:
            out = self.inner.generate(prompts, sampling)
        with self._lock:
            for key, gen in zip(_keys(prompts, sessions), out):
                self.records[key].append(gen)
        return out

    def sync_weights(self, learner: Any) -> float:
        return float(self.inner.sync_weights(learner) or 0.0)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class ReplayBackend:
    """Serves recorded generations (`RecordingBackend.records`) for the same sessions and prompts.

    ``concurrent_generate`` says whether asynchronous rollouts may call it from many threads
    (it is thread-safe either way). Weight syncs cost nothing: the responses are fixed.
    """

    supports_training = True
    takes_sessions = True

    def __init__(
        self, records: dict[Key, Sequence[Generation]], *, concurrent_generate: bool = False
    ):
        self._queues = {key: deque(gens) for key, gens in records.items()}
        self.concurrent_generate = concurrent_generate
        self._lock = threading.Lock()
        self.syncs = 0

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        sessions: Sequence[Hashable] | None = None,
    ) -> list[Generation]:
        check_request(prompts, sampling, structured=True)  # plays back what was recorded
        out = []
        with self._lock:
            for key in _keys(prompts, sessions):
                queue = self._queues.get(key)
                if not queue:
                    raise KeyError(
                        f"no recorded generation left for session {key[0]!r} and a prompt of "
                        f"{len(key[1])} tokens: the replayed run left the recorded one"
                    )
                out.append(queue.popleft())
        return out

    @property
    def remaining(self) -> int:
        """Recorded generations not served yet."""
        return sum(len(q) for q in self._queues.values())

    def sync_weights(self, learner: Any) -> float:
        self.syncs += 1
        return 0.0

    def close(self) -> None:
        self._queues = {}
