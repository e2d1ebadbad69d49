"""TextWorld-v0: games from TextWorld's generator, the engine's rewards, walkthrough and facts."""

import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("textworld")

from creditgym.envs import textworld_env  # noqa: E402
from creditgym.envs.textworld_env import KINDS, TextWorldEnv  # noqa: E402

pytestmark = pytest.mark.slow  # each game is compiled by TextWorld (seconds) on first use


def test_check_env_without_warnings():
    env = gymnasium.make(
        "creditgym/TextWorld-v0", split="valid", kinds=["coin_collector"], panel_size=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_panels_are_seeded_disjoint_and_cover_kinds():
    train, valid = TextWorldEnv(split="train"), TextWorldEnv(split="valid")
    assert len(train.panel) == 64 and len(valid.panel) == 16
    assert not set(train.panel.ids) & set(valid.panel.ids)
    assert {i.split("/")[0] for i in valid.panel.ids} == set(KINDS)
    assert TextWorldEnv(split="valid").panel.hash == valid.panel.hash
    with pytest.raises(ValueError, match="unknown TextWorld game kinds"):
        TextWorldEnv(kinds=["zork"])


def test_walkthrough_wins_every_kind_with_engine_rewards():
    env = TextWorldEnv(split="test", panel_size=4)
    for i in range(4):
        obs, info = env.reset(options={"task_id": i})
        assert info["task_type"] == KINDS[i] and info["task"] and info["admissible_actions"]
        start_key = info["state_key"]
        total, done, keys = 0.0, False, {start_key}
        while not done:
            action = env.expert_action()
            assert action in info["admissible_actions"]
            obs, reward, term, trunc, info = env.step(action)
            total += reward
            keys.add(info["state_key"])
            done = term or trunc
        assert info["won"] and info["score"] == 1.0 and total >= 1.0, env.panel.ids[i]
        assert len(keys) > 1
        # replaying gives the same observations (seeded game, deterministic engine)
        obs2, info2 = env.reset(options={"task_id": i})
        assert info2["state_key"] == start_key


def test_bad_actions_are_refused_without_touching_the_game():
    env = TextWorldEnv(split="test", kinds=["treasure_hunter"], panel_size=1)
    obs, info = env.reset(options={"task_id": 0})
    key = info["state_key"]
    for bad in ["quit", "restart", "", "\n\n", "x" * 9000, "look\nquit"]:
        obs, reward, term, trunc, info = env.step(bad)
        assert not info["action_valid"] and reward == 0.0 and not term
        assert "not one of the admissible commands" in obs and info["state_key"] == key
    obs, reward, term, trunc, info = env.step(env.expert_action())
    assert info["action_valid"]
    env.close()


#: A train task whose generation gives textworld's GenerationWarning (found by generating the
#: train panel: "Not enough variation for '#work_(r)#'. Falling back on ...").
WARNING_TASK = "coin_collector/level=27/1"


def test_generation_warnings_are_recorded_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITGYM_CACHE", str(tmp_path))  # a fresh cache: the game is generated
    assert TextWorldEnv(split="train").panel.ids[1] == WARNING_TASK
    textworld_env.GENERATION_WARNINGS.pop(WARNING_TASK, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = textworld_env.make_game_file(WARNING_TASK)
    assert path.exists() and str(path).startswith(str(tmp_path))
    recorded = textworld_env.GENERATION_WARNINGS[WARNING_TASK]
    assert recorded and all("Not enough variation" in m for m in recorded)


def test_other_warnings_still_reach_the_caller():
    from textworld.generator import GenerationWarning

    absorb = textworld_env._absorb_generation_warnings
    with pytest.warns(RuntimeWarning, match="not absorbed"), absorb("t/x/0"):
        warnings.warn("absorbed", GenerationWarning, stacklevel=1)
        warnings.warn("not absorbed", RuntimeWarning, stacklevel=1)
    assert textworld_env.GENERATION_WARNINGS.pop("t/x/0") == ["absorbed"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning), absorb("t/x/1"):
            warnings.warn("an error here", RuntimeWarning, stacklevel=1)
