"""Typed configs: YAML + dotted overrides, nearest-key errors, every shipped config loads and means
what it says, the typed learner section, registry-checked names, choice lists defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from creditgym.trainers.config import (
    AgentConfig,
    ConfigError,
    LearnerConfig,
    TrainConfig,
    apply_overrides,
    load,
    load_config,
    parse_overrides,
)

CONFIGS = Path(__file__).resolve().parents[2] / "scripts" / "configs"


def test_defaults_validate() -> None:
    cfg = load_config()
    assert isinstance(cfg, TrainConfig)
    assert cfg.credit.name == "gigpo"
    assert cfg.resolved_run_dir == Path("runs") / "run"


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nenv:\n  kwargs: {level: small}\nrollout:\n  group_size: 4\n")
    cfg = load_config(
        path,
        [
            "rollout.group_size=8",
            "env.kwargs.max_steps=6",
            "credit.options.gamma=0.9",
            "agent.temperature=1e-1",  # YAML 1.1 would read this as a string
            "logging.tensorboard=false",
        ],
    )
    assert cfg.rollout.group_size == 8
    assert cfg.env.kwargs == {"level": "small", "max_steps": 6}
    assert cfg.credit.options == {"gamma": 0.9}
    assert cfg.agent.temperature == pytest.approx(0.1)
    assert cfg.logging.tensorboard is False


def test_unknown_key_names_the_nearest_valid_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["agent.temprature=0.5"])
    assert "agent.temprature" in str(err.value)
    assert "agent.temperature" in str(err.value)


def test_unknown_section_and_leaf_only_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rolout.group_size=2", "group_sise=3"])
    msg = str(err.value)
    assert "did you mean rollout" in msg
    assert "rollout.group_size" in msg


def test_unknown_key_in_a_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  iteratons: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "train.iterations" in str(err.value)


def test_credit_module_and_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="did you mean.*gigpo"):
        load_config(None, ["credit.name=gipgo"])
    with pytest.raises(ConfigError, match="gamma"):
        load_config(None, ["credit.options.gama=0.9"])


def test_wrong_types_and_ranges_say_what_was_given() -> None:
    with pytest.raises(ConfigError, match=r"rollout\.group_size.*'many'"):
        load_config(None, ["rollout.group_size=many"])
    with pytest.raises(ConfigError, match=r"agent\.top_p"):
        load_config(None, ["agent.top_p=1.5"])
    with pytest.raises(ConfigError, match=r"backend\.name"):
        load_config(None, ["backend.name=tgi"])


def test_malformed_overrides_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["rollout.group_size"])
    with pytest.raises(ConfigError, match="empty key"):
        parse_overrides(["a..b=1"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"seed": 1}, {"seed.x": 2})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_overrides_do_not_mutate_their_input() -> None:
    data = {"env": {"kwargs": {"level": "small"}}}
    out = apply_overrides(data, {"env.kwargs.level": "hard"})
    assert data["env"]["kwargs"]["level"] == "small"
    assert out["env"]["kwargs"]["level"] == "hard"


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ["name=rt", "env.kwargs.level=small", "eval.every=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS))
)
def test_every_shipped_config_loads_and_validates(path: Path) -> None:
    from creditgym import envs

    cfg = load_config(path)
    assert cfg.train.iterations >= 1
    assert cfg.env.id in envs.list_envs()


def test_config_written_before_the_rename_says_what_to_change(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("env:\n  id: envs:creditgym/KeyRooms-v0\n")
    with pytest.raises(ConfigError, match=r"creditgym\.envs:creditgym/KeyRooms-v0") as exc:
        load_config(path)
    assert "env.id" in str(exc.value)


# ----------------------------------------------------------------------------- one config system
def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS))
)
def test_every_shipped_config_means_what_its_file_says(path: Path) -> None:
    """Every value written in the file is the loaded config's value (nothing renamed or lost)."""
    written = _leaves(yaml.safe_load(path.read_text()))
    loaded = _leaves(load_config(path).model_dump(mode="json"))
    assert written
    for key, value in written.items():
        got = loaded.get(key, "<missing>")
        assert got == value, f"{path.name}: {key} = {value!r} in the file, {got!r} loaded"


def test_learner_section_is_typed_and_follows_the_agent() -> None:
    cfg = load_config(None, ["learner.lr=1e-3", "agent.temperature=0.5", "agent.context=concat"])
    assert isinstance(cfg.learner, LearnerConfig) and cfg.learner.lr == pytest.approx(1e-3)
    assert cfg.learner.temperature is None and cfg.learner.context is None  # unset: follow
    resolved = cfg.resolved_learner()
    assert type(resolved) is LearnerConfig
    assert (resolved.temperature, resolved.context, resolved.lr) == (0.5, "concat", 1e-3)
    assert cfg.resolved_learner(lr=5e-4, kl_coef=0.0).lr == 5e-4
    greedy = load_config(None, ["agent.temperature=0"]).resolved_learner()
    assert greedy.temperature == 1.0  # a greedy agent: the learner scores at 1
    with pytest.raises(ConfigError, match="did you mean learner.micro_batch_tokens"):
        load_config(None, ["learner.micro_batch_size=512"])
    with pytest.raises(ConfigError, match=r"learner\.finetune: finetune must be one of"):
        load_config(None, ["learner.finetune=qlora"])
    with pytest.raises(ConfigError, match="learner.temperature=0.7 differs"):
        load_config(None, ["learner.temperature=0.7"])
    with pytest.raises(ValueError, match="kl_type must be one of"):
        LearnerConfig(kl_type="k9")


def test_learner_options_survive_the_saved_config(tmp_path: Path) -> None:
    cfg = load_config(None, ["learner.adam_betas=[0.8, 0.9]", "agent.temperature=0.5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path, ["agent.temperature=0.7"])  # still follows the agent
    assert again.learner.adam_betas == (0.8, 0.9)
    assert again.resolved_learner().temperature == 0.7


def test_a_registered_backend_can_be_named_and_unknown_ones_list_the_registry() -> None:
    from creditgym.agents import backends

    with pytest.raises(ConfigError, match=r"unknown backend 'mine'.*registered: \[.*'hf'"):
        load_config(None, ["backend.name=mine"])
    backends.register_backend("mine", "creditgym.agents.backends.hf:HFBackend")
    try:
        assert load_config(None, ["backend.name=mine"]).backend.name == "mine"
    finally:
        backends._LAZY.pop("mine")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "rollout.env_backend=rey",
            r"unknown env backend 'rey'; did you mean ray\? "
            r"\(registered: \['inprocess', 'process', 'ray'\]\)",
        ),
        ("rollout.strategy=async", r"unknown rollout strategy 'async'.*'lockstep'"),
        ("sampler.name=prio", r"unknown task sampler 'prio'.*'uniform'"),
        ("loss.policy=ppo", r"unknown policy loss 'ppo'; did you mean ppo_clip"),
        ("loss.terms=[kl, kll]", r"unknown loss term 'kll'.*'entropy', .*'kl'"),
        ("loss.terms=[kl, kl]", r"terms listed twice: \['kl'\]"),
    ],
)
def test_seam_names_are_checked_against_their_registries(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_seam_defaults_and_a_registered_sampler() -> None:
    from creditgym.trainers import samplers

    cfg = load_config()
    assert (cfg.rollout.env_backend, cfg.rollout.envs_per_shard) == ("inprocess", 8)
    assert (cfg.rollout.strategy, cfg.sampler.name) == ("lockstep", "uniform")
    assert (cfg.loss.policy, cfg.loss.terms) == ("ppo_clip", ["kl", "entropy"])

    @samplers.register_sampler("h2-test-reversed")
    class Reversed(samplers.UniformSampler):
        pass

    try:
        cfg = load_config(None, ["sampler.name=h2-test-reversed", "sampler.options={}"])
        assert cfg.sampler.name == "h2-test-reversed"
    finally:
        samplers._SAMPLERS.unregister("h2-test-reversed")


def test_a_registry_module_that_does_not_exist_yet_is_skipped(monkeypatch) -> None:
    from creditgym.trainers import config as config_module

    monkeypatch.setitem(
        config_module.REGISTRIES, "sampler.name", ("creditgym.trainers.no_such_module", "available")
    )
    assert config_module.registered("sampler.name") is None
    assert load_config(None, ["sampler.name=anything"]).sampler.name == "anything"


def test_choice_lists_are_defined_once() -> None:
    """Each choice list is assigned in exactly one module of the package; others import it."""
    import ast

    root = CONFIGS.parents[1]
    names = ("CONTEXT_MODES", "OUTPUT_FORMATS", "ACTION_MATCH", "KL_TYPES", "FINETUNE_MODES")
    found: dict[str, list[str]] = {n: [] for n in names}
    for folder in ("envs", "agents", "credit", "trainers", "scripts"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                for t in targets:
                    if isinstance(t, ast.Name) and t.id in found:
                        found[t.id].append(str(path.relative_to(root)))
    assert {n: len(v) for n, v in found.items()} == dict.fromkeys(names, 1), found
    from creditgym.agents.parsing import OUTPUT_FORMATS

    choices = AgentConfig.model_fields["output_format"].annotation.__args__
    assert tuple(choices) == OUTPUT_FORMATS


def test_benchmark_config_loads_with_the_same_loader(tmp_path: Path) -> None:
    from creditgym.trainers.bench_config import BenchmarkConfig

    path = tmp_path / "bench.yaml"
    path.write_text("env_kwargs: {level: small}\nmethods: grpo,gigpo\nseeds: 2\n")
    cfg = load(BenchmarkConfig, path, ["iterations=5", "dump_iterations=none"])
    assert cfg == BenchmarkConfig(
        env_kwargs={"level": "small"}, methods=["grpo", "gigpo"], seeds=2, iterations=5,
        dump_iterations=[],
    )  # fmt: skip
    assert cfg.resolved().dump_iterations == []
    hiper = load(BenchmarkConfig, None, ["methods=[hiper]", "iterations=5"]).resolved()
    assert hiper.method_options["hiper"]["group_bootstrap"] == "return"
    assert hiper.dump_iterations == [0]  # 10 and 20 lie past the run
    with pytest.raises(ConfigError, match="did you mean seeds"):
        load(BenchmarkConfig, None, ["seed=3"])
    with pytest.raises(ConfigError, match="igpo needs"):
        load(BenchmarkConfig, None, ["methods=igpo"])
    with pytest.raises(ConfigError, match="adv_scale"):
        load(BenchmarkConfig, None, ["adv_scale=max"])
