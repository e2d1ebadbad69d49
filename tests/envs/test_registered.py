"""Every registered creditgym env passes Gymnasium's checker, seeded, without warnings.

The full check (every id, default settings) is slow; a quick one checks one id per env class
with cheap settings, so `make test-quick` runs the contract check too.
"""

import os
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from creditgym import envs

CREDITGYM_IDS = envs.list_envs(namespace="creditgym")

#: Settings that keep the quick check cheap (small panels, cheap game kinds); an id listed here
#: is its class's representative in the quick check.
QUICK_KWARGS = {
    "creditgym/TextWorld-v0": {"kinds": ["treasure_hunter"], "panel_size": 1},
    "creditgym/TWX-sorting-v0": {"panel_size": 2},
    "creditgym/ToolUse-v0": {"families": ["arithmetic"]},
    "creditgym/WebShop-v0": {"n_products": 100},
}


def _one_id_per_class(ids: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for env_id in sorted(ids, key=lambda i: (i not in QUICK_KWARGS, i)):
        entry = gymnasium.spec(env_id).entry_point
        seen.setdefault(entry if isinstance(entry, str) else repr(entry), env_id)
    return sorted(seen.values())


def _check(env_id: str, quick: bool = False, **kwargs) -> None:
    if env_id == "creditgym/OpenEnv-v0" and not os.environ.get("CREDITGYM_OPENENV_URL"):
        pytest.skip(
            "needs a live OpenEnv server: set CREDITGYM_OPENENV_URL (tests/ecosystem start one)"
        )
    env = gymnasium.make(env_id, **kwargs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # Seeded: check_env's own unseeded resets then continue this seed's stream, so the
            # tasks it plays (and its sampled actions) are the same on every run.
            env.unwrapped.reset(seed=0)
            env.unwrapped.action_space.seed(0)
            # (the quick check skips building and closing a second instance)
            check_env(env.unwrapped, skip_render_check=True, skip_close_check=quick)
    finally:
        env.close()


def test_builtin_ids_are_listed():
    assert "creditgym/KeyRooms-v0" in CREDITGYM_IDS


@pytest.mark.parametrize("env_id", _one_id_per_class(CREDITGYM_IDS))
def test_check_env_quick(env_id):
    _check(env_id, quick=True, **QUICK_KWARGS.get(env_id, {}))


@pytest.mark.slow
@pytest.mark.parametrize("env_id", CREDITGYM_IDS)
def test_check_env(env_id):
    _check(env_id)
