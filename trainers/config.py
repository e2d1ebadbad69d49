"""Typed training configs: YAML files plus dotted ``key=value`` overrides.

A run is described by one `TrainConfig`: which model, env, agent, backend, credit module and learner
options, the rollout budget, evaluation, checkpointing and logging. `load_config` reads a YAML file,
applies overrides such as ``learner.lr=1e-5`` or ``env.kwargs.level=medium`` and validates the
result. Any unknown key, in the file or in an override, is an error that names the nearest valid
keys, so a typo never silently falls back to a default.

Two sections are open-ended and checked against the component that consumes them rather than a
schema here: ``credit.options`` against the options dataclass of the named credit module, and
``learner`` against `creditgym.trainers.learner.LearnerConfig` (imported lazily: it pulls in torch).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "AgentConfig",
    "BackendConfig",
    "ConfigError",
    "CreditConfig",
    "EnvConfig",
    "EvalConfig",
    "LoggingConfig",
    "ModelConfig",
    "RolloutConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "parse_overrides",
    "valid_keys",
]


class ConfigError(ValueError):
    """A config file or override is wrong; the message says which key and what would be right."""


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )


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
    output_format: Literal["action", "search", "tool", "hiper"] = "action"
    """Which tags the agent must write (see `creditgym.agents.parsing`)."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature during training rollouts (1.0 samples the trained policy)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass during training rollouts."""
    max_new_tokens: int = Field(64, ge=1)
    """Generated tokens per turn at most."""
    context: Literal["steps", "concat"] = "steps"
    """"steps": a fresh prompt per turn; "concat": the episode is one growing token sequence
    (the learner's ``context`` option must match)."""
    admissible_limit: int | None = Field(50, ge=1)
    """List at most this many admissible actions in the prompt (None: all)."""
    response_prefix: str = ""
    """Text that starts the assistant's reply as part of the prompt (e.g. "<action>"); never
    trained on."""
    action_match: Literal["strict", "admissible"] = "strict"
    """"admissible": map the output to the admissible action it names (see `creditgym.agents.llm`)."""
    stop: list[str] = Field(default_factory=list)
    """Generation stops after any of these strings (e.g. ["</action>"])."""


class BackendConfig(_Section):
    name: Literal["hf", "vllm", "vllm-server", "openai"] = "hf"
    """Generation backend (see `creditgym.agents.backends.make_backend`)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Backend-specific options (e.g. ``base_url`` for "openai", ``max_model_len`` for vLLM)."""


class RolloutConfig(_Section):
    tasks_per_iteration: int = Field(2, ge=1)
    """B: distinct tasks per iteration."""
    group_size: int = Field(4, ge=1)
    """G: episodes per task, all reset with the same seed (a group)."""


class CreditConfig(_Section):
    name: str = "gigpo"
    """Registered credit module (see `creditgym.credit.available()`)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the module's paper defaults, checked against its options dataclass."""


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
    credit: CreditConfig = Field(default_factory=CreditConfig)
    warmstart: WarmstartConfig = Field(default_factory=WarmstartConfig)
    """Behaviour cloning of the env's expert before RL (`creditgym.trainers.warmstart`); the run then
    trains the cloned model, which is also its KL reference."""
    learner: dict[str, Any] = Field(default_factory=dict)
    """Fields of `creditgym.trainers.learner.LearnerConfig` (e.g. ``lr``, ``lora_r``, ``micro_batch_size``)."""
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

    @field_validator("learner")
    @classmethod
    def _check_learner(cls, value: dict[str, Any]) -> dict[str, Any]:
        learner_config(value)  # raises with the nearest field names
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        temp = self.learner.get("temperature")
        if temp is not None and self.agent.temperature > 0 and temp != self.agent.temperature:
            raise ValueError(
                f"learner.temperature={temp} differs from agent.temperature="
                f"{self.agent.temperature}: the learner must score tokens at the sampling "
                "temperature (leave learner.temperature unset to follow the agent)"
            )
        ctx = self.learner.get("context")
        if ctx is not None and ctx != self.agent.context:
            raise ValueError(
                f"learner.context={ctx!r} differs from agent.context={self.agent.context!r} "
                "(leave learner.context unset to follow the agent)"
            )
        return self

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def learner_config(options: dict[str, Any]) -> Any:
    """Build a `creditgym.trainers.learner.LearnerConfig` from a dict, checking every key and type."""
    from pydantic import TypeAdapter

    from creditgym.trainers.learner import LearnerConfig

    known = [f.name for f in dataclasses.fields(LearnerConfig)]
    for key in options:
        if key not in known:
            raise ValueError(_unknown_message(f"learner.{key}", [f"learner.{k}" for k in known]))
    try:
        return TypeAdapter(LearnerConfig).validate_python(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"learner.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(problems) from None


def valid_keys(model: type[BaseModel] = TrainConfig, prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts (open dicts are listed by their own name)."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(valid_keys(ann, dotted + "."))
        else:
            keys.append(dotted)
    if model is TrainConfig:
        try:
            from creditgym.trainers.learner import LearnerConfig

            keys.extend(f"learner.{f.name}" for f in dataclasses.fields(LearnerConfig))
        except ImportError:
            pass
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


def _format_errors(exc: ValidationError, source: str) -> str:
    candidates = valid_keys()
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
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


def from_dict(data: dict[str, Any], source: str = "<dict>") -> TrainConfig:
    """Validate a plain dict as a `TrainConfig`, raising `ConfigError` with readable messages."""
    check_legacy(data, source)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or start from defaults), apply ``key=value`` overrides, validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
        data = loaded or {}
        source = str(path)
    if overrides:
        data = apply_overrides(data, parse_overrides(overrides))
        source += " + overrides"
    return from_dict(data, source)
