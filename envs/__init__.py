"""creditgym environments and their registry.

Every env is a `TextEnv` registered with Gymnasium under the ``creditgym/`` namespace, made with
``gymnasium.make("creditgym/<Name>-v0", split=..., **kwargs)``. Registering your own env is one
``gymnasium.register`` call; `list_envs` then lists it and every trainer and script accepts it.
"""

from __future__ import annotations

import importlib

import gymnasium

from creditgym.envs.base import SPLITS, Panel, TextEnv, cache_dir, sanitize_text

__all__ = ["SPLITS", "Panel", "TextEnv", "cache_dir", "list_envs", "make", "sanitize_text"]

# Built-in envs: (id, entry point, default kwargs). Entry points are strings, so importing `envs`
# stays cheap and an env's heavy dependencies load only when it is made.
_BUILTIN: list[tuple[str, str, dict]] = [
    ("creditgym/KeyRooms-v0", "creditgym.envs.keyrooms:KeyRoomsEnv", {}),
    ("creditgym/Search-v0", "creditgym.envs.search:SearchEnv", {}),
    ("creditgym/SearchDiscrete-v0", "creditgym.envs.search.discrete:SearchDiscreteEnv", {}),
    ("creditgym/ToolUse-v0", "creditgym.envs.tooluse:ToolUseEnv", {}),
    ("creditgym/WebShop-v0", "creditgym.envs.webshop:WebShopEnv", {}),
    ("creditgym/ALFWorld-v0", "creditgym.envs.alfworld:ALFWorldEnv", {}),
    ("creditgym/TextWorld-v0", "creditgym.envs.textworld_env:TextWorldEnv", {}),
    *(
        (f"creditgym/TWX-{game}-v0", "creditgym.envs.twx:TWXEnv", {"game": game})
        for game in ("cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting")
    ),
    # An OpenEnv server (ours or anyone's) as a TextEnv; needs base_url= or CREDITGYM_OPENENV_URL.
    ("creditgym/OpenEnv-v0", "creditgym.envs.remote.client:OpenEnvEnv", {}),
]

for _id, _entry, _kwargs in _BUILTIN:
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry, kwargs=_kwargs, disable_env_checker=True)


def list_envs(namespace: str | None = None) -> list[str]:
    """Ids of every registered text env (all `TextEnv` subclasses, any namespace by default)."""
    ids = []
    for env_id, spec in gymnasium.registry.items():
        if namespace is not None and spec.namespace != namespace:
            continue
        entry = spec.entry_point
        if isinstance(entry, str):
            if entry.startswith("gymnasium.envs.") or ":" not in entry:
                continue  # Gymnasium's own control/robotics envs are never text envs.
            if env_id.startswith("creditgym/") or entry.startswith("creditgym.envs."):
                ids.append(env_id)
                continue
            try:
                module, name = entry.split(":")
                entry = getattr(importlib.import_module(module), name)
            except Exception:  # a third-party env whose dependencies are missing
                continue
        if isinstance(entry, type) and issubclass(entry, TextEnv):
            ids.append(env_id)
    return sorted(ids)


def make(env_id: str, **kwargs) -> TextEnv:
    """`gymnasium.make` that returns the unwrapped `TextEnv` (no order/checker wrappers)."""
    return gymnasium.make(env_id, **kwargs).unwrapped
