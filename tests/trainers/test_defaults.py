"""Every function default that a config key also sets equals the config's default.

A config section and the function it feeds both carry a default; when they drift (warm_start once
defaulted to 2 epochs where WarmstartConfig said 1), code that calls the function directly and a
run built from a config behave differently. Each pair is read with `inspect.signature`, so a
changed default on either side fails here. Script flags that are sugar for config keys must have
no default of their own (None), so the config's is the only one.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from creditgym.agents.backends.base import SamplingConfig
from creditgym.agents.llm import LLMAgent
from creditgym.trainers import (
    answer_scoring,
    evaluation,
    loss,
    losses,
    shard_remote,
    shards,
    warmstart,
)
from creditgym.trainers.bench_config import BenchmarkConfig
from creditgym.trainers.config import (
    AgentConfig,
    EnvConfig,
    EvalConfig,
    LearnerConfig,
    LossConfig,
    RolloutConfig,
    SamplerConfig,
    TrainConfig,
    WarmstartConfig,
    valid_keys,
)
from creditgym.trainers.learner import Learner


def defaults(fn: Any) -> dict[str, Any]:
    """Parameter name -> default of `fn` (only the parameters that have one)."""
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def config_default(section: Any, name: str) -> Any:
    if dataclasses.is_dataclass(section):
        field = section.__pydantic_fields__[name]
    else:
        field = section.model_fields[name]
    return field.get_default(call_default_factory=True)


#: (function, parameter, config section, field): each pair must agree.
PAIRS = [
    # make_agent passes every agent option to LLMAgent and SamplingConfig.
    *[
        (LLMAgent.__init__, name, AgentConfig, name)
        for name in (
            "history_length",
            "max_prompt_tokens",
            "output_format",
            "context",
            "admissible_limit",
            "response_prefix",
            "action_match",
        )
    ],
    *[(SamplingConfig, n, AgentConfig, n) for n in ("temperature", "top_p", "max_new_tokens")],
    # The learner's objective and the loss functions it calls.
    (Learner.__init__, "loss_policy", LossConfig, "policy"),
    (loss.ppo_clip, "clip_low", LearnerConfig, "clip_low"),
    (loss.ppo_clip, "clip_high", LearnerConfig, "clip_high"),
    (loss.kl_penalty, "kind", LearnerConfig, "kl_type"),
    (answer_scoring.score_answers, "answer_prefix", LearnerConfig, "answer_prefix"),
    # Evaluation and the env pools.
    (evaluation.evaluate_policy, "seed", EvalConfig, "seed"),
    (shards.EnvPool.__init__, "split", EnvConfig, "train_split"),
    (shards.EnvPool.__init__, "backend", RolloutConfig, "env_backend"),
    (shards.EnvPool.__init__, "envs_per_shard", RolloutConfig, "envs_per_shard"),
    *[
        (shard_remote.RemoteShard.__init__, name, RolloutConfig, name)
        for name in ("step_timeout_s", "recycle_episodes", "recycle_rss_mb", "max_failed_rebuilds")
    ],
]


@pytest.mark.parametrize(
    ("fn", "param", "section", "field"),
    PAIRS,
    ids=[f"{fn.__qualname__}.{p}={s.__name__}.{f}" for fn, p, s, f in PAIRS],
)
def test_function_default_equals_config_default(fn, param, section, field) -> None:
    assert defaults(fn)[param] == config_default(section, field)


def test_sequence_defaults_agree() -> None:
    assert tuple(defaults(SamplingConfig)["stop"]) == tuple(config_default(AgentConfig, "stop"))
    assert list(defaults(Learner.__init__)["loss_terms"]) == config_default(LossConfig, "terms")
    assert config_default(LossConfig, "policy") == losses.DEFAULT_POLICY
    assert list(losses.DEFAULT_TERMS) == config_default(LossConfig, "terms")
    assert config_default(LearnerConfig, "answer_prefix") == answer_scoring.DEFAULT_ANSWER_PREFIX


def test_the_default_seams_are_registered() -> None:
    from creditgym.trainers import samplers, strategies

    assert config_default(RolloutConfig, "env_backend") in shards.available()
    assert config_default(RolloutConfig, "strategy") in strategies.available()
    assert config_default(SamplerConfig, "name") in samplers.available()
    assert config_default(LossConfig, "policy") in losses.available_policies()
    assert set(config_default(LossConfig, "terms")) <= set(losses.available_terms())


def test_warm_start_takes_every_option_from_the_warmstart_section() -> None:
    options = {k: v for k, v in defaults(warmstart.warm_start).items() if k != "progress"}
    assert options and set(options) <= set(WarmstartConfig.model_fields)
    assert all(v is None for v in options.values()), options  # None: config.warmstart's value


def _script(name: str) -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("script", "schema"),
    [("benchmark_credit", BenchmarkConfig), ("evaluate", TrainConfig), ("warmstart", TrainConfig)],
)
def test_script_flags_for_config_keys_have_no_defaults_of_their_own(script, schema) -> None:
    module = _script(script)
    flags = {
        action.option_strings[0]: action.default
        for action in module.build_parser()._actions
        if action.option_strings
    }
    sugar = module.FLAGS
    assert sugar and set(sugar) <= set(flags)
    for flag in sugar:
        assert flags[flag] is None, f"{script}.py {flag} defaults to {flags[flag]!r}"
    keys = {k if isinstance(k, str) else k[0] for k in sugar.values()}
    assert keys <= set(valid_keys(schema)), keys - set(valid_keys(schema))
