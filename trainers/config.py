"""Typed configs: YAML files plus dotted ``key=value`` overrides, one loader for every script.

A training run is described by one `TrainConfig`: which model, env, agent, backend, credit module and
learner options, the rollout budget and its seams (env backend, rollout strategy, task sampler,
loss), evaluation, checkpointing and logging. `load_config` reads a YAML file, applies overrides
such as ``learner.lr=1e-5`` or ``env.kwargs.level=medium`` and validates the result; `load` does the
same for any other schema (the credit benchmark's `creditgym.trainers.bench_config.BenchmarkConfig`).
Any unknown key, in the file or in an override, is an error that names the nearest valid keys, so a
typo never silently falls back to a default.

Every section is typed here, the ``learner:`` section too: `LearnerConfig` is the learner's own
options class (`creditgym.trainers.learner.Learner` takes it), so its fields, defaults and
docstrings exist once. Names that pick a registered component are checked against that registry,
not a fixed list: ``credit.name`` (and ``credit.options``, against the module's options),
``backend.name`` (`creditgym.agents.backends.available_backends`), and the seams in `REGISTRIES`.

Choice lists live in the lowest layer that uses them and are imported from there: output formats
and action matching in `creditgym.agents.parsing`, context modes in `creditgym.agents.llm`; the
learner's fine-tune modes, KL estimators and dtypes here (this module imports no torch, and the
learner and loss import them from it).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from creditgym.agents.llm import CONTEXT_MODES
from creditgym.agents.parsing import ACTION_MATCH, OUTPUT_FORMATS

__all__ = [
    "DTYPES",
    "FINETUNE_MODES",
    "KL_TYPES",
    "REGISTRIES",
    "AgentConfig",
    "BackendConfig",
    "ConfigError",
    "CreditConfig",
    "EnvConfig",
    "EvalConfig",
    "LearnerConfig",
    "LearnerSection",
    "LoggingConfig",
    "LossConfig",
    "ModelConfig",
    "ROLLOUT_MODES",
    "RayConfig",
    "RolloutConfig",
    "RunConfig",
    "SamplerConfig",
    "TrainConfig",
    "WarmstartConfig",
    "apply_overrides",
    "from_dict",
    "learner_config",
    "load",
    "load_config",
    "parse_overrides",
    "read_yaml",
    "registered",
    "valid_keys",
]

#: Learner fine-tuning modes: LoRA adapters (via peft) or all weights.
FINETUNE_MODES = ("lora", "full")
#: KL(pi || reference) estimators (`creditgym.trainers.loss.kl_penalty`).
KL_TYPES = ("low_var_kl", "kl", "mse")
#: Parameter dtypes the learner accepts.
DTYPES = ("float32", "bfloat16", "float16")
#: Where pi_old comes from (``learner.old_logprobs``).
OLD_LOGPROBS = ("learner", "sampler")
#: Rollout modes (``rollout.mode``): lock-step iterations, or staleness-bounded async rollouts.
ROLLOUT_MODES = ("sync", "async")
#: Where the learner's model lives ("auto": this rank's GPU when CUDA is present, else the CPU).
DEVICES = ("auto", "cpu", "cuda")
#: How a data-parallel run wraps the policy (`creditgym.trainers.distributed`).
DATA_PARALLEL_MODES = ("ddp", "fsdp2")

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override is wrong; the message says which key and what would be right."""


_SECTION_CONFIG = ConfigDict(
    extra="forbid", validate_assignment=True, use_attribute_docstrings=True
)


#: The learner's options validate when built, not on assignment (tests and tools set a field
#: on a live learner's config, e.g. a smaller token budget); `LearnerConfig.validate` re-checks.
_LEARNER_CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class _Section(BaseModel):
    model_config = _SECTION_CONFIG


def _one_of(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


# ------------------------------------------------------------------------------ registries
#: Seam key -> (registry module, function listing its names). A registry module that does not
#: exist (yet) is skipped; a name it does not list is a `ConfigError` naming the ones it does.
REGISTRIES: dict[str, tuple[str, str]] = {
    "rollout.env_backend": ("creditgym.trainers.shards", "available"),
    "rollout.strategy": ("creditgym.trainers.strategies", "available"),
    "sampler.name": ("creditgym.trainers.samplers", "available"),
    "loss.policy": ("creditgym.trainers.losses", "available_policies"),
    "loss.terms": ("creditgym.trainers.losses", "available_terms"),
    "tracker.name": ("creditgym.trainers.trackers", "available"),
    "buffer.name": ("creditgym.trainers.buffers", "available"),
}


#: How an error message names each seam's components.
_SEAM_LABELS = {
    "rollout.env_backend": "env backend",
    "rollout.strategy": "rollout strategy",
    "sampler.name": "task sampler",
    "loss.policy": "policy loss",
    "loss.terms": "loss term",
    "tracker.name": "tracker",
    "buffer.name": "buffer",
}


def registered(key: str) -> list[str] | None:
    """The names registered for seam `key` (see `REGISTRIES`), or None if its module is absent."""
    module_name, function = REGISTRIES[key]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    listing = getattr(module, function, None)
    if listing is None:
        return None
    return sorted(listing())


def _check_registered(key: str, names: str | list[str]) -> None:
    known = registered(key)
    if known is None:
        return
    for name in [names] if isinstance(names, str) else names:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ValueError(f"unknown {_SEAM_LABELS[key]} {name!r}{hint} (registered: {known})")


# -------------------------------------------------------------------------------- sections
class ModelConfig(_Section):
    name: str = "smollm2-135m"
    """Model to train: "smollm2-135m" (the offline default), "tiny" (random-initialised test
    model), a local Hugging Face folder or a hub id."""


class EnvConfig(_Section):
    id: str = "creditgym/KeyRooms-v0"
    """Registered env id (see `creditgym.envs.list_envs()`)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for ``gymnasium.make`` (e.g. ``{"level": "small", "max_steps": 8}``)."""
    train_split: str = "train"
    """Panel the training tasks come from."""
    eval_split: str = "valid"
    """Panel the periodic evaluation runs on."""


class AgentConfig(_Section):
    history_length: int = Field(2, ge=0)
    """How many previous (observation, action) pairs the prompt shows."""
    max_prompt_tokens: int = Field(1024, ge=16)
    """Prompt budget; the oldest history steps are dropped (and counted) to fit it."""
    output_format: Literal[OUTPUT_FORMATS] = "action"  # type: ignore[valid-type]
    """Which tags the agent must write (see `creditgym.agents.parsing`)."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature during training rollouts (1.0 samples the trained policy)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass during training rollouts."""
    max_new_tokens: int = Field(64, ge=1)
    """Generated tokens per turn at most."""
    context: Literal[CONTEXT_MODES] = "steps"  # type: ignore[valid-type]
    """"steps": a fresh prompt per turn; "concat": the episode is one growing token sequence
    (the learner's ``context`` option must match)."""
    admissible_limit: int | None = Field(50, ge=1)
    """List at most this many admissible actions in the prompt (None: all)."""
    response_prefix: str = ""
    """Text that starts the assistant's reply as part of the prompt (e.g. "<action>"); never
    trained on."""
    action_match: Literal[ACTION_MATCH] = "strict"  # type: ignore[valid-type]
    """"admissible": map the output to the admissible action it names (see `creditgym.agents.llm`)."""
    stop: list[str] = Field(default_factory=list)
    """Generation stops after any of these strings (e.g. ["</action>"])."""


class BackendConfig(_Section):
    name: str = "hf"
    """Generation backend, one of `creditgym.agents.backends.available_backends()` ("hf",
    "vllm", "vllm-server", "openai", and any added with ``register_backend``)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Backend-specific options (e.g. ``base_url`` for "openai", ``max_model_len`` for vLLM)."""
    replicas: list[str] = Field(default_factory=list)
    """URLs of running vLLM servers (``http://host:port/v1``) to use as generation replicas
    with "vllm-server" (`creditgym.agents.backends.replicas`); empty: start servers here."""
    num_replicas: int = Field(1, ge=1)
    """How many vLLM servers "vllm-server" starts (one per replica) when ``replicas`` is empty."""

    @field_validator("replicas")
    @classmethod
    def _check_replicas(cls, value: list[str]) -> list[str]:
        bad = [u for u in value if not re.match(r"^https?://[^/\s]+", u)]
        if bad:
            raise ValueError(f"replicas must be http(s) URLs like http://127.0.0.1:8000/v1: {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"replicas lists a URL twice: {value}")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        from creditgym.agents.backends import available_backends

        known = available_backends()
        if value not in known:
            near = difflib.get_close_matches(value, known, n=3, cutoff=0.3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ValueError(f"unknown backend {value!r}{hint} (registered: {known})")
        return value


class RolloutConfig(_Section):
    tasks_per_iteration: int = Field(2, ge=1)
    """B: distinct tasks per iteration."""
    group_size: int = Field(4, ge=1)
    """G: episodes per task, all reset with the same seed (a group)."""
    env_backend: str = "inprocess"
    """Where the envs run: a registered env-shard backend (`creditgym.trainers.shards`;
    "inprocess": worker processes of this machine, today's pool)."""
    envs_per_shard: int = Field(8, ge=1)
    """Envs one shard holds."""
    step_timeout_s: float | None = Field(None, gt=0)
    """Remote env backends: an env call (reset, step, ...) slower than this kills its shard;
    its running episodes end with ``info["error"]`` and are dropped (None: no limit)."""
    recycle_episodes: int | None = Field(None, ge=1)
    """Remote env backends: rebuild a shard after this many episodes (None: never)."""
    recycle_rss_mb: float | None = Field(None, gt=0)
    """Remote env backends: rebuild a shard whose worker's RSS is above this (None: never)."""
    max_failed_rebuilds: int = Field(3, ge=1)
    """Remote env backends: failed rebuilds of one shard in a row before the run stops."""
    strategy: str = "lockstep"
    """Rollout strategy (`creditgym.trainers.strategies`; "lockstep": every running episode
    advances one turn per batched generation call)."""
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    """Options of the named strategy (e.g. tree: ``{"mode": "spo", "branching": [6, 6, 6]}``),
    checked by building it once."""

    @model_validator(mode="after")
    def _check_strategy_options(self) -> RolloutConfig:
        from creditgym.trainers import strategies

        try:
            strategies.make(self.strategy, **self.strategy_options)
        except (TypeError, ValueError, NotImplementedError) as exc:
            raise ValueError(f"rollout.strategy_options for {self.strategy!r}: {exc}") from None
        return self

    mode: Literal[ROLLOUT_MODES] = "sync"  # type: ignore[valid-type]
    """"sync": each iteration's groups are played, then trained on; "async": episodes advance
    independently while the learner trains, at most ``max_staleness`` versions behind
    (`creditgym.trainers.async_rollout`)."""
    max_staleness: int = Field(1, ge=0)
    """S (async mode): groups admitted <= (S + v + 1) x B at policy version v, so a batch is
    sampled at most S updates before the policy it trains; 0 trains on the same batches as sync."""

    @field_validator("env_backend")
    @classmethod
    def _check_env_backend(cls, value: str) -> str:
        _check_registered("rollout.env_backend", value)
        return value

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, value: str) -> str:
        _check_registered("rollout.strategy", value)
        return value


class RayConfig(_Section):
    """Ray, for ``rollout.env_backend: ray`` (`creditgym.trainers.shard_ray`)."""

    address: str | None = None
    """Cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None: start a
    local one for this run and shut it down at the end."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of the local cluster (None: this machine's count); ignored with ``address``."""
    cpus_per_shard: float = Field(0.0, ge=0)
    """CPUs each env-shard actor reserves (0: env actors mostly wait on their envs)."""
    shard_resources: dict[str, float] = Field(default_factory=dict)
    """Custom resources each shard actor needs, e.g. ``{env_node: 0.01}`` to keep shards on
    nodes started with ``--resources='{"env_node": 1}'``."""

    @field_validator("shard_resources")
    @classmethod
    def _check_resources(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not k or v <= 0}
        if bad:
            raise ValueError(f"shard_resources need names and amounts > 0, got {bad}")
        return value


class SamplerConfig(_Section):
    name: str = "uniform"
    """Task sampler (`creditgym.trainers.samplers`; "uniform": seeded shuffled passes over the
    train panel)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Options of the named sampler."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        _check_registered("sampler.name", value)
        return value


class LossConfig(_Section):
    """Which registered losses make up the learner's objective (`creditgym.trainers.losses`).

    The coefficients stay in the ``learner:`` section: ``kl_coef`` and ``kl_type`` for the "kl"
    term, ``entropy_coef`` for the "entropy" term. A listed term whose coefficient is 0 adds
    nothing (and ``kl_coef: 0`` skips the reference pass), as before the seam existed.
    """

    policy: str = "ppo_clip"
    """Policy loss ("ppo_clip": the clipped surrogate with ``learner.clip_low/clip_high``)."""
    terms: list[str] = Field(default_factory=lambda: ["kl", "entropy"])
    """Terms added to the policy loss ("kl": KL to the reference policy, "entropy": the entropy
    bonus)."""
    term_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Options of listed terms that take them, by term name (e.g. ``{epo: {coef: 0.001}}``)."""

    @field_validator("policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        _check_registered("loss.policy", value)
        return value

    @field_validator("terms")
    @classmethod
    def _check_terms(cls, value: list[str]) -> list[str]:
        dup = sorted({t for t in value if value.count(t) > 1})
        if dup:
            raise ValueError(f"terms listed twice: {dup}")
        _check_registered("loss.terms", value)
        return value

    @model_validator(mode="after")
    def _check_term_options(self) -> LossConfig:
        extra = sorted(set(self.term_options) - set(self.terms))
        if extra:
            raise ValueError(f"loss.term_options names terms not in loss.terms: {extra}")
        return self


class PluginConfig(_Section):
    name: str | None = None
    """Registered plug-in (None: none)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Options of the named plug-in."""


class TrackerConfig(PluginConfig):
    """State across iterations that hands values to the credit module
    (`creditgym.trainers.trackers`; "sspo_value": Single-stream PO's per-task values)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None:
            _check_registered("tracker.name", value)
        return value


class BufferConfig(PluginConfig):
    """Rewrites each batch's groups before credit (`creditgym.trainers.buffers`;
    "arpo_replay": ARPO's replay of past successes into all-failing groups)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None:
            _check_registered("buffer.name", value)
        return value


class CreditConfig(_Section):
    name: str = "gigpo"
    """Registered credit module (see `creditgym.credit.available()`)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the module's paper defaults, checked against its options dataclass."""


@pydantic_dataclass(config=_LEARNER_CONFIG)
class LearnerConfig:
    """Options of the policy update (defaults follow verl-agent / GiGPO where they apply).

    A pydantic dataclass: built from keyword arguments (``LearnerConfig(lr=1e-5)``) or a dict, it
    validates every field; `validate` checks again after fields were changed in place.
    """

    finetune: str = "lora"
    """"lora" (adapters via peft; the reference is the adapter-disabled model) or "full"."""
    lora_r: int = Field(16, ge=1)
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input (0 keeps the old and new policies comparable)."""
    lora_target_modules: str | list[str] = "all-linear"
    """Modules that get adapters: "all-linear" or a list of module names."""
    lr: float = Field(2e-5, gt=0)
    """AdamW learning rate (LoRA usually wants about 10x a full fine-tune's)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Gradient norm clip per optimizer step (0 disables)."""
    clip_low: float = Field(0.2, ge=0, lt=1)
    """PPO clip: the ratio is clipped below at 1 - clip_low."""
    clip_high: float = Field(0.2, ge=0)
    """PPO clip: the ratio is clipped above at 1 + clip_high (raise for DAPO-style clip-higher)."""
    decoupled: bool = False
    """Decoupled PPO (async rollouts): weight each token's clipped surrogate by
    w = min(pi_prox / mu, tis_cap), pi_prox the old-log-prob pass, mu the sampler's log-prob."""
    tis_cap: float = Field(2.0, gt=0)
    """Truncation of the decoupled-PPO importance weight w = pi_prox / mu (TIS)."""
    opmd_tau: float = Field(1.0, ge=0)
    """R^3L's policy loss "opmd": -A log pi / (1 + opmd_tau), no ratio, no clip (tau = 1)."""
    prob_mask: float | None = Field(None, gt=0, le=1)
    """SPO's probability mask: response tokens with p_old >= this leave the loss, its terms
    and the token counts (0.9 in SPO; None: off). Needs the sampler's log-probs."""
    kl_coef: float = 0.01
    """Weight of the "kl" loss term, KL(pi || reference) (0 disables it and skips the reference
    pass)."""
    kl_type: str = "low_var_kl"
    """KL estimator: "low_var_kl" (k3), "kl" (k1) or "mse" (k2)."""
    entropy_coef: float = 0.0
    """Weight of the "entropy" loss term, the entropy bonus (subtracted from the loss)."""
    value_coef: float = 0.5
    """Weight of the value-head loss (trained when the credit module returns value targets)."""
    epochs: int = Field(1, ge=1)
    """Passes over the batch per update."""
    mini_batches: int = Field(2, ge=1)
    """Optimizer steps per epoch (the batch is shuffled and split; >= 2 makes clipping matter)."""
    minibatch_split: Literal["group", "sample"] = "group"
    """How the batch is cut into mini-batches: "group" shuffles the groups and cuts the samples,
    in that order, into `mini_batches` chunks of near-equal size, so samples that share a task's
    prompt prefix travel together and packing forwards the prefix once (verl also splits by
    group); "sample" shuffles the samples one by one. Packing on or off trains the same split."""
    micro_batch_tokens: int = Field(2048, ge=16)
    """Token budget of one forward/backward (padded length x samples); gradients accumulate."""
    context: str = "steps"
    """"steps" (one sample per step) or "concat" (one sequence per episode; env tokens masked)."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the rollouts; logits are divided by it when scoring tokens."""
    dtype: str = "float32"
    """Parameter dtype ("float32" is the fast one on CPUs without bf16 units)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about 30% slower)."""
    packing: bool = True
    """Forward samples that share a token prefix once per prefix (exact; models it is not
    verified on fall back to unpacked, `creditgym.trainers.packing`)."""
    pack_tokens: int = Field(1024, ge=16)
    """Most tokens in one packed row (a prefix tree); attention cost grows with its square."""
    old_logprobs: str = "learner"
    """pi_old of the PPO ratio: "learner" (the learner's own pass before the update) or
    "sampler" (the generation backend's log-probs; refused with rollout.mode="async")."""
    device: str = "auto"
    """Learner device: "auto" (this rank's GPU when CUDA is present, else the CPU), "cpu", "cuda"."""
    data_parallel: str = "ddp"
    """Wrapper of a multi-rank run (torchrun / Ray Train): "ddp" or "fsdp2" (decoder layers
    sharded); ignored in one process."""
    answer_prefix: str = "</think>\n<answer>"
    """IGPO: text put between the context and the ground-truth answer when scoring it
    (`creditgym.trainers.answer_scoring.DEFAULT_ANSWER_PREFIX`)."""
    seed: int = 0
    """Seed of the mini-batch shuffling (combined with the update counter)."""

    @field_validator("finetune")
    @classmethod
    def _check_finetune(cls, value: str) -> str:
        return _one_of("finetune", value, FINETUNE_MODES)

    @field_validator("kl_type")
    @classmethod
    def _check_kl_type(cls, value: str) -> str:
        return _one_of("kl_type", value, KL_TYPES)

    @field_validator("context")
    @classmethod
    def _check_context(cls, value: str | None) -> str | None:
        return value if value is None else _one_of("context", value, CONTEXT_MODES)

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, value: str) -> str:
        return _one_of("dtype", value, DTYPES)

    @field_validator("old_logprobs")
    @classmethod
    def _check_old_logprobs(cls, value: str) -> str:
        return _one_of("old_logprobs", value, OLD_LOGPROBS)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return _one_of("device", value, DEVICES)

    @field_validator("data_parallel")
    @classmethod
    def _check_data_parallel(cls, value: str) -> str:
        return _one_of("data_parallel", value, DATA_PARALLEL_MODES)

    def validate(self) -> None:
        """Check the fields again (they are checked on construction, not on assignment)."""
        type(self).__pydantic_validator__.validate_python(dataclasses.asdict(self))


@pydantic_dataclass(config=_LEARNER_CONFIG)
class LearnerSection(LearnerConfig):
    """The ``learner:`` section: `LearnerConfig`, with ``temperature`` and ``context`` left to
    follow the agent unless set (`TrainConfig.resolved_learner` fills them in)."""

    context: str | None = None
    """"steps" or "concat"; None (the default) follows ``agent.context``, which it must equal."""
    temperature: float | None = Field(None, gt=0)
    """Scoring temperature; None (the default) follows ``agent.temperature`` (1.0 when that is
    0, greedy), which it must equal when the agent samples."""
    decoupled: bool | None = None
    """Decoupled-PPO correction; None (the default) turns it on exactly when
    ``rollout.mode`` is "async"."""


class WarmstartConfig(_Section):
    episodes: int = Field(0, ge=0)
    """Expert episodes (train split) to behaviour-clone before RL; 0 skips the warm start."""
    epochs: int = Field(1, ge=1)
    """Passes over the demonstrations."""
    lr: float = Field(2e-4, gt=0)
    """AdamW learning rate of the warm start."""
    mini_batches: int = Field(8, ge=1)
    """Optimizer steps per epoch."""
    eval_episodes: int = Field(16, ge=0)
    """Held-out expert episodes (eval split) for the greedy step accuracy before and after."""


class EvalConfig(_Section):
    every: int = Field(0, ge=0)
    """Evaluate after every k-th iteration (0: only before and after training)."""
    tasks: int = Field(20, ge=0)
    """How many tasks of the eval panel (its first ones, so every eval sees the same tasks)."""
    before_training: bool = True
    """Also evaluate the initial policy (iteration 0)."""
    after_training: bool = True
    """Also evaluate after the last iteration."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature of evaluation episodes."""
    seed: int = 1234
    """Seed of evaluation resets and sampling (fixed, so evals are comparable)."""


class RunConfig(_Section):
    iterations: int = Field(10, ge=0)
    """Training iterations (rollout, credit, update, sync)."""
    checkpoint_every: int = Field(1, ge=0)
    """Write a checkpoint after every k-th iteration (0: only at the end)."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many of the newest checkpoints to keep on disk."""


class LoggingConfig(_Section):
    tensorboard: bool = True
    """Also write TensorBoard events when `tensorboard` is installed."""
    wandb: bool = False
    """Also log to Weights & Biases when `wandb` is installed."""
    wandb_project: str = "creditgym"
    """W&B project name."""
    dump_trajectories: bool = True
    """Write every iteration's steps (observation, action, reward, state key, advantage)."""
    progress: bool = True
    """Show the rich progress display (plain lines when stdout is not a terminal)."""
    plot: bool = True
    """Save a learning-curve PNG in the run folder at the end."""


class TrainConfig(_Section):
    """Everything that defines one training run."""

    name: str = "run"
    """Run name; the default run folder is ``runs/<name>``."""
    run_dir: str | None = None
    """Run folder (default ``runs/<name>``)."""
    seed: int = 0
    """Seed of task sampling, generation and the learner."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    """Ray cluster for the ``ray`` env backend (unused by the other backends)."""
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    """How each iteration's tasks are drawn from the train panel."""
    credit: CreditConfig = Field(default_factory=CreditConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    """A tracker plug-in (issue 19; none by default)."""
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    """A buffer plug-in (issue 19; none by default)."""
    warmstart: WarmstartConfig = Field(default_factory=WarmstartConfig)
    """Behaviour cloning of the env's expert before RL (`creditgym.trainers.warmstart`); the run then
    trains the cloned model, which is also its KL reference."""
    learner: LearnerSection = Field(default_factory=LearnerSection)
    """The policy update (`LearnerConfig`: e.g. ``lr``, ``lora_r``, ``micro_batch_tokens``)."""
    loss: LossConfig = Field(default_factory=LossConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    train: RunConfig = Field(default_factory=RunConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("credit")
    @classmethod
    def _check_credit(cls, value: CreditConfig) -> CreditConfig:
        from creditgym import credit

        try:
            credit.make(value.name, **value.options)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        temp = self.learner.temperature
        if temp is not None and self.agent.temperature > 0 and temp != self.agent.temperature:
            raise ValueError(
                f"learner.temperature={temp} differs from agent.temperature="
                f"{self.agent.temperature}: the learner must score tokens at the sampling "
                "temperature (leave learner.temperature unset to follow the agent)"
            )
        mode = getattr(self.rollout, "mode", "sync")
        if self.learner.old_logprobs == "sampler" and mode not in ("sync", "lockstep"):
            raise ValueError(
                f"learner.old_logprobs='sampler' is refused with rollout.mode={mode!r}: async "
                "training needs the learner's own old-log-prob pass (pi_prox); use "
                "learner.old_logprobs='learner'"
            )
        self._check_rollout_mode()
        self._check_branching()
        from creditgym.trainers.plugins import check_combination

        check_combination(
            self.credit.name, self.credit.options, self.sampler.name, self.tracker.name,
            self.buffer.name, self.tracker.options, self.buffer.options,
        )  # fmt: skip
        ctx = self.learner.context
        if ctx is not None and ctx != self.agent.context:
            raise ValueError(
                f"learner.context={ctx!r} differs from agent.context={self.agent.context!r} "
                "(leave learner.context unset to follow the agent)"
            )
        return self

    def _check_branching(self) -> None:
        """A credit method or rollout strategy that needs env branching refuses an env that
        cannot branch (``branching = "none"``), naming both."""
        from creditgym import credit
        from creditgym.envs.branching import require_branching
        from creditgym.trainers import strategies

        wants = []
        if getattr(strategies.strategy_class(self.rollout.strategy), "needs_branching", False):
            wants.append(f"rollout.strategy={self.rollout.strategy!r}")
        if "branching" in credit.make(self.credit.name, **self.credit.options).needs:
            wants.append(f"credit method {self.credit.name!r}")
        if wants:
            require_branching(self.env.id, " and ".join(wants))

    def _check_rollout_mode(self) -> None:
        """Async needs a strategy that supports it; replicas need the "vllm-server" backend."""
        if self.rollout.mode == "async":
            from creditgym.trainers import strategies

            cls = strategies.strategy_class(self.rollout.strategy)
            if not cls.supports_async:
                raise ValueError(
                    f"rollout.strategy={self.rollout.strategy!r} does not support "
                    f"rollout.mode='async' (strategies that do: {strategies.async_strategies()});"
                    " use rollout.mode='sync'"
                )
        replicated = bool(self.backend.replicas) or self.backend.num_replicas > 1
        if replicated and self.backend.name != "vllm-server":
            raise ValueError(
                f"backend.replicas / backend.num_replicas need backend.name='vllm-server', "
                f"got {self.backend.name!r}"
            )
        if self.backend.replicas and self.backend.num_replicas > 1:
            raise ValueError(
                "set backend.replicas (servers already running) or backend.num_replicas "
                "(servers started here), not both"
            )

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    def resolved_learner(self, **changes: Any) -> LearnerConfig:
        """The `LearnerConfig` the learner gets: the section, with ``temperature`` and
        ``context`` following the agent where unset, and `changes` applied."""
        options = dataclasses.asdict(self.learner)
        if options["temperature"] is None:
            options["temperature"] = self.agent.temperature or 1.0
        if options["context"] is None:
            options["context"] = self.agent.context
        if options["decoupled"] is None:
            options["decoupled"] = self.rollout.mode == "async"
        return learner_config({**options, **changes})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def learner_config(options: Mapping[str, Any]) -> LearnerConfig:
    """Build a `LearnerConfig` from a mapping, naming the nearest field of an unknown key."""
    known = [f.name for f in dataclasses.fields(LearnerConfig)]
    for key in options:
        if key not in known:
            raise ValueError(_unknown_message(f"learner.{key}", [f"learner.{k}" for k in known]))
    try:
        return LearnerConfig(**dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"learner.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(problems) from None


def _fields(schema: Any) -> dict[str, Any] | None:
    """The pydantic fields of a model or pydantic dataclass (None for anything else)."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return dict(schema.model_fields)
    return getattr(schema, "__pydantic_fields__", None) if isinstance(schema, type) else None


def valid_keys(model: type[Any] = TrainConfig, prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts (open dicts are listed by their own name)."""
    keys = []
    for name, field in (_fields(model) or {}).items():
        dotted = f"{prefix}{name}"
        if _fields(field.annotation) is not None:
            keys.extend(valid_keys(field.annotation, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _unknown_message(key: str, candidates: list[str]) -> str:
    sections = {c.rsplit(".", 1)[0] for c in candidates if "." in c}
    candidates = sorted(set(candidates) | sections)
    near = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
    leaf = key.rsplit(".", 1)[-1]
    by_leaf = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf and c not in near]
    near = (near + by_leaf)[:3]
    if not near:  # fall back to the leaf name alone, anywhere in the schema
        leaves = {c.rsplit(".", 1)[-1]: c for c in candidates}
        near = [leaves[k] for k in difflib.get_close_matches(leaf, list(leaves), n=3, cutoff=0.6)]
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return f"unknown config key {key!r}{hint}"


_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")


def _format_errors(exc: ValidationError, source: str, schema: type[Any] = TrainConfig) -> str:
    candidates = valid_keys(schema)
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] in _UNKNOWN:
            lines.append(_unknown_message(loc, candidates))
        elif err["type"] == "value_error":
            msg = str(err.get("ctx", {}).get("error", err["msg"]))
            lines.append(f"{loc}: {msg}")
        else:
            got = err.get("input")
            lines.append(f"{loc}: {err['msg']} (got {got!r})")
    return f"invalid config ({source}):\n  " + "\n  ".join(lines)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``a.b=value`` strings; values are YAML scalars/lists/maps (``lr=1e-5`` is a float)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        out[key] = _parse_value(raw)
    return out


def _parse_value(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-5" as a string; numbers are what people mean
            return float(value) if any(c in value for c in "eE.") else int(value)
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (copying what it changes); creates missing levels."""
    data = _deep_copy(data)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {key!r}: {where!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


#: Import names the code had before it moved under the ``creditgym`` namespace.
LEGACY_PACKAGES = ("envs", "agents", "credit", "trainers")
_LEGACY = re.compile(rf"^({'|'.join(LEGACY_PACKAGES)})([.:])")


def legacy_names(data: Any, path: str = "") -> list[tuple[str, str]]:
    """(dotted key, value) of every string that names a module by its pre-rename import name."""
    found: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            found.extend(legacy_names(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found.extend(legacy_names(value, f"{path}[{i}]"))
    elif isinstance(data, str) and _LEGACY.match(data):
        found.append((path, data))
    return found


def check_legacy(data: Any, source: str) -> None:
    """Refuse a config written before the rename, saying exactly what to change."""
    hits = legacy_names(data)
    if hits:
        fixes = "; ".join(f"{key}: {value!r} -> {'creditgym.' + value!r}" for key, value in hits)
        raise ConfigError(
            f"{source} was written before creditgym's packages moved under the `creditgym` "
            f"namespace (`envs` is now `creditgym.envs`, and so on). Change: {fixes}"
        )


def from_dict(data: dict[str, Any], source: str = "<dict>", schema: type[M] = TrainConfig) -> M:
    """Validate a plain dict as `schema` (a `TrainConfig` by default), raising `ConfigError`."""
    check_legacy(data, source)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, schema)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds ({} for an empty file); `ConfigError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return loaded or {}


def load(
    schema: type[M],
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> M:
    """The one loader: read a YAML file (or start from the defaults), apply dotted overrides
    (``key=value`` strings or an already parsed dict), validate as `schema`."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data = read_yaml(path)
        source = str(path)
    if overrides:
        parsed = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        data = apply_overrides(data, parsed)
        source += " + overrides"
    return from_dict(data, source, schema)


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> TrainConfig:
    """Read a training config (or start from defaults), apply ``key=value`` overrides, validate."""
    return load(TrainConfig, path, overrides)
