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
