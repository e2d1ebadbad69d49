"""Typed configs: YAML + dotted overrides, nearest-key errors, and every shipped config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditgym.trainers.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
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
