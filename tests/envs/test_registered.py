"""Every registered creditgym env passes Gymnasium's checker, seeded, without warnings, and
every env that can branch passes `check_branching` (snapshot / restore / replay).

The full check (every id, default settings) is slow; a quick one checks one id per env class
with cheap settings, so `make test-quick` runs the contract check too.
"""

import os
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from creditgym import envs
from creditgym.envs.branching import branching_of
from creditgym.envs.checks import check_branching

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


#: Engine- or server-backed envs whose branching check takes over ~2 s run in the slow suite.
SLOW_BRANCH = ("creditgym/TextWorld-v0", "creditgym/TWX-", "creditgym/WebShop-v0")
#: Extra slow variants of the branching check: other backends of the same id.
BRANCH_VARIANTS = [
    ("creditgym/ALFWorld-v0", {"backend": "textworld", "panel_size": 2}),
    ("creditgym/WebShop-v0", {"n_products": 100, "mode": "browser"}),
]


def _branch_options(env_id: str, kwargs: dict) -> dict:
    """check_branching settings: engines and browsers play one short episode per prefix kind."""
    if kwargs.get("backend") == "textworld" or kwargs.get("mode") == "browser":
        return {"episodes": 1, "n_steps": 4, "prefixes": ("expert",)}
    if env_id.startswith(SLOW_BRANCH):
        return {"episodes": 1, "n_steps": 5}
    return {"episodes": 2, "n_steps": 10}


def _check_branches(env_id: str, **kwargs) -> None:
    if branching_of(env_id) == "none":
        pytest.skip(f"{env_id} declares branching = 'none'")
    env = envs.make(env_id, **kwargs)
    # A second instance matters for native snapshots (a replay starts with a reset anyway).
    native = env.branching == "snapshot" and kwargs.get("backend", "fast") == "fast"
    other = envs.make(env_id, **kwargs) if native else None
    try:
        report = check_branching(env, other=other, seed=0, **_branch_options(env_id, kwargs))
    finally:
        env.close()
        if other is not None:
            other.close()
    assert report.episodes >= 1 and sum(report.restores.values()) >= 3
    if native:
        assert report.restores.get("native", 0) > 0  # native snapshots were really used


_QUICK_BRANCH = [
    i
    for i in _one_id_per_class(CREDITGYM_IDS)
    if not i.startswith(SLOW_BRANCH) and branching_of(i) != "none"
]


@pytest.mark.parametrize("env_id", _QUICK_BRANCH)
def test_check_branching_quick(env_id):
    _check_branches(env_id, **QUICK_KWARGS.get(env_id, {}))


def test_openenv_cannot_branch():
    assert branching_of("creditgym/OpenEnv-v0") == "none"


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id,kwargs",
    [
        pytest.param(i, QUICK_KWARGS.get(i, {}), id=i)
        for i in CREDITGYM_IDS
        if i not in _QUICK_BRANCH and branching_of(i) != "none"
    ]
    + [pytest.param(i, kw, id=f"{i}-{next(iter(kw.values()))}") for i, kw in BRANCH_VARIANTS],
)
def test_check_branching(env_id, kwargs):
    _check_branches(env_id, **kwargs)
