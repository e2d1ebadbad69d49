"""TWX-<game>-v0: the TextWorld-Express games through their real (Java) engine."""

import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("textworld_express")

from creditgym import envs  # noqa: E402
from creditgym.envs.twx import GAMES, TWXEnv  # noqa: E402

pytestmark = pytest.mark.slow  # each env starts a JVM (about a second)


@pytest.mark.parametrize("game", GAMES)
def test_check_env_and_gold_path_wins(game):
    env_id = f"creditgym/TWX-{game}-v0"
    assert env_id in envs.list_envs()
    env = gymnasium.make(env_id, split="valid", panel_size=3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped)
        env = env.unwrapped
        for i in range(3):
            obs, info = env.reset(options={"task_id": i})
            assert info["task_type"] == game and info["admissible_actions"]
            keys, total, done = {info["state_key"]}, 0.0, False
            while not done:
                action = env.expert_action()
                assert action is not None, (game, i)
                obs, reward, term, trunc, info = env.step(action)
                keys.add(info["state_key"])
                total += reward
                done = term or trunc
            assert info["won"] and info["score"] == 1.0 and total > 0, (game, i)
            assert len(keys) > 1
    finally:
        env.close()


def test_panels_use_the_engine_folds_and_replay_deterministically():
    env = TWXEnv(game="coin", split="test", panel_size=5)
    try:
        assert all(i.startswith("coin/test/") for i in env.panel.ids)
        train = TWXEnv(game="coin", split="train", panel_size=5)
        assert not set(train.panel.ids) & set(env.panel.ids)
        train.close()
        traces = []
        for _ in range(2):
            obs, info = env.reset(options={"task_id": 2})
            trace = [obs]
            for action in ["look around", "inventory", "fly away", "x" * 3000, "jump\nhigh"]:
                obs, reward, term, trunc, info = env.step(action)
                trace.append(obs)
            traces.append(trace)
            assert not info["action_valid"]
        assert traces[0] == traces[1]
        with pytest.raises(ValueError, match="unknown TextWorld-Express game"):
            TWXEnv(game="zork")
    finally:
        env.close()


def test_a_surrogate_action_logs_no_traceback(caplog, capfd):
    """A lone surrogate (what a byte-level decoder can emit) used to make py4j log a stack of
    UnicodeEncodeError tracebacks on every such step; TextEnv.step now replaces it first.
    (Only the steps are watched: py4j logs socket errors of its own when the JVM shuts down.)"""
    caplog.set_level("DEBUG")
    env = TWXEnv(game="coin", split="test", panel_size=2)
    try:
        env.reset(options={"task_id": 0})
        caplog.clear()
        capfd.readouterr()
        obs, reward, term, trunc, info = env.step("take \udcff coin")
        assert not info["action_valid"] and not term
        assert env.step("look around")[4]["action_valid"]  # the engine is still fine
        logged = caplog.text + "".join(capfd.readouterr())
        assert "py4j" in logged  # py4j's DEBUG log is captured here: the check can see it
        assert "UnicodeEncodeError" not in logged and "Traceback" not in logged
    finally:
        env.close()
