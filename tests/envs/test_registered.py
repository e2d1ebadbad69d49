"""Every registered creditgym env passes Gymnasium's checker, without warnings."""

import os
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from creditgym import envs

CREDITGYM_IDS = envs.list_envs(namespace="creditgym")


def test_builtin_ids_are_listed():
    assert "creditgym/KeyRooms-v0" in CREDITGYM_IDS


@pytest.mark.slow
@pytest.mark.parametrize("env_id", CREDITGYM_IDS)
def test_check_env(env_id):
    if env_id == "creditgym/OpenEnv-v0" and not os.environ.get("CREDITGYM_OPENENV_URL"):
        pytest.skip(
            "needs a live OpenEnv server: set CREDITGYM_OPENENV_URL (tests/ecosystem start one)"
        )
    env = gymnasium.make(env_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()
