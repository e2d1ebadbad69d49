"""Wiring: the learner, generation backend, agent, credit module and env pools of a `TrainConfig`.

Each ``make_*`` function builds one component from its config section; `build_components` builds
them in the order the trainer needs (the learner first: the backend may share its module, and the
agent uses its tokenizer). Nothing here runs a loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from creditgym import credit
from creditgym.agents.backends.base import Generation, SamplingConfig
from creditgym.agents.base import check_format
from creditgym.trainers.config import AgentConfig, TrainConfig
from creditgym.trainers.rollout import EnvPool

__all__ = [
    "Components",
    "TimedBackend",
    "build_components",
    "make_agent",
    "make_generation_backend",
    "make_learner",
    "make_pools",
    "shard_options",
]

# Silence tokenizers' fork warning in env worker processes started after tokenisation.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class TimedBackend:
    """Wraps a generation backend to add up the seconds spent in `generate`."""

    def __init__(self, backend: Any):
        self._backend = backend
        self.seconds = 0.0
        self.tokens = 0

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, **kwargs: Any
    ) -> list[Generation]:
        t0 = time.perf_counter()
        out = self._backend.generate(prompts, sampling, **kwargs)
        self.seconds += time.perf_counter() - t0
        self.tokens += sum(len(g.token_ids) for g in out)
        return out

    def take(self) -> tuple[float, int]:
        """Seconds and tokens since the last call."""
        seconds, tokens = self.seconds, self.tokens
        self.seconds, self.tokens = 0.0, 0
        return seconds, tokens

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def make_agent(cfg: AgentConfig, backend: Any, tokenizer: Any) -> tuple[Any, SamplingConfig]:
    """The LLM agent and its sampling options, as an ``agent:`` config section describes them."""
    from creditgym.agents.llm import LLMAgent

    sampling = SamplingConfig(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        stop=tuple(cfg.stop),
    )
    agent = LLMAgent(
        backend,
        tokenizer,
        history_length=cfg.history_length,
        max_prompt_tokens=cfg.max_prompt_tokens,
        sampling=sampling,
        output_format=cfg.output_format,
        context=cfg.context,
        admissible_limit=cfg.admissible_limit,
        response_prefix=cfg.response_prefix,
        action_match=cfg.action_match,
    )
    return agent, sampling


def make_learner(cfg: TrainConfig, model_path: str, module: Any = None) -> Any:
    """The `Learner` of the ``learner:`` and ``loss:`` sections, serving the value heads the
    credit module ``module`` declares; it scores tokens at the agent's sampling temperature and
    in the agent's context mode unless the section says otherwise."""
    from creditgym.trainers.learner import Learner

    return Learner(
        cfg.resolved_learner(),
        model_path,
        value_heads=None if module is None else module.value_heads,
        loss_policy=cfg.loss.policy,
        loss_terms=cfg.loss.terms,
    )


def _shared_gpu_kwargs(cfg: TrainConfig, learner: Any) -> dict[str, Any]:
    """The backend's kwargs; an in-process vLLM engine next to a CUDA learner gets the share of
    the GPU that the learner's memory estimate leaves free (unless the config sets one)."""
    kwargs = dict(cfg.backend.kwargs)
    device = getattr(learner, "device", None)
    if cfg.backend.name == "vllm" and getattr(device, "type", None) == "cuda":
        from creditgym.trainers.memory import estimate_learner, vllm_memory_fraction

        kwargs.setdefault("gpu_memory_utilization", vllm_memory_fraction(estimate_learner(learner)))
    return kwargs


def make_generation_backend(cfg: TrainConfig, model_path: str, learner: Any) -> Any:
    """The ``backend:`` section's backend for ``model_path``; refuses one that cannot train."""
    from creditgym.agents.backends import make_backend

    # Each backend takes from the learner what it needs (hf: its module and tokenizer).
    if cfg.backend.replicas or cfg.backend.num_replicas > 1:  # vllm-server replicas
        from creditgym.agents.backends.replicas import ReplicaSet

        backend: Any = ReplicaSet(
            model_path,
            replicas=cfg.backend.replicas,
            num_replicas=cfg.backend.num_replicas,
            tokenizer=learner.tokenizer,
            **cfg.backend.kwargs,
        )
    else:
        kwargs = _shared_gpu_kwargs(cfg, learner)
        backend = make_backend(cfg.backend.name, model_path, learner=learner, **kwargs)
    if not getattr(backend, "supports_training", True):
        raise ValueError(
            f"backend {cfg.backend.name!r} cannot return sampled token ids, so it can only "
            "evaluate; train with backend.name=hf or vllm"
        )
    return backend


def shard_options(cfg: TrainConfig) -> dict[str, Any]:
    """`EnvPool` keyword arguments of the ``rollout:`` (and, for Ray, ``ray:``) sections."""
    r = cfg.rollout
    options: dict[str, Any] = {
        "backend": r.env_backend,
        "envs_per_shard": r.envs_per_shard,
        "step_timeout_s": r.step_timeout_s,
        "recycle_episodes": r.recycle_episodes,
        "recycle_rss_mb": r.recycle_rss_mb,
        "max_failed_rebuilds": r.max_failed_rebuilds,
    }
    if r.env_backend == "ray":
        options.update(
            ray_address=cfg.ray.address,
            ray_num_cpus=cfg.ray.num_cpus,
            ray_cpus_per_shard=cfg.ray.cpus_per_shard,
            ray_resources=dict(cfg.ray.shard_resources),
        )
    return options


def make_pools(cfg: TrainConfig) -> tuple[EnvPool, EnvPool | None]:
    """The training pool (B x G envs on the train split) and the eval pool (None without eval)."""
    b, g = cfg.rollout.tasks_per_iteration, cfg.rollout.group_size
    shards = shard_options(cfg)
    pool = EnvPool(
        cfg.env.id, b * g, split=cfg.env.train_split, env_kwargs=cfg.env.kwargs, **shards
    )
    eval_pool = None
    if cfg.eval.tasks > 0:
        eval_pool = EnvPool(
            cfg.env.id,
            min(cfg.eval.tasks, 64),
            split=cfg.env.eval_split,
            env_kwargs=cfg.env.kwargs,
            **shards,
        )
    return pool, eval_pool


@dataclass
class Components:
    """What `build_components` returns: everything but the env pools."""

    learner: Any
    backend: Any
    #: The backend wrapped to time `generate`; the agent calls this one.
    timed: TimedBackend
    agent: Any
    sampling: SamplingConfig
    credit: Any


def build_components(cfg: TrainConfig, model_path: str) -> Components:
    """Learner, backend, agent and credit module for ``cfg``, with the policy at ``model_path``."""
    check_format(cfg.env.id, cfg.agent.output_format)  # before anything heavy is built
    module = credit.make(cfg.credit.name, **cfg.credit.options)
    learner = make_learner(cfg, model_path, module)
    backend = make_generation_backend(cfg, model_path, learner)
    timed = TimedBackend(backend)
    agent, sampling = make_agent(cfg.agent, timed, learner.tokenizer)
    return Components(learner, backend, timed, agent, sampling, module)
