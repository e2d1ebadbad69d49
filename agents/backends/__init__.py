"""Generation backends behind one interface, made by name with `make_backend`.

``hf`` lives here; ``vllm``, ``vllm-server`` and ``openai`` are imported only when asked for, so
importing creditgym never needs vLLM. A backend module can list its factories in a module-level
``BACKENDS`` dict (name -> callable); otherwise the usual class names are looked up.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

from creditgym.agents.backends.base import Backend, Generation, SamplingConfig

__all__ = [
    "Backend",
    "Generation",
    "SamplingConfig",
    "available_backends",
    "make_backend",
    "register_backend",
]

#: name -> (module, candidate factory names in that module).
_LAZY: dict[str, tuple[str, tuple[str, ...]]] = {
    "hf": ("creditgym.agents.backends.hf", ("HFBackend",)),
    "vllm": ("creditgym.agents.backends.vllm", ("VLLMBackend", "VllmBackend", "VLLMEngineBackend")),
    "vllm-server": ("creditgym.agents.backends.vllm", ("VLLMServerBackend", "VllmServerBackend")),
    "openai": ("creditgym.agents.backends.openai", ("OpenAIBackend", "OpenAICompatibleBackend")),
}
_FACTORIES: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend] | str) -> None:
    """Make ``make_backend(name, ...)`` call `factory` (a callable or ``"module:attr"``)."""
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        if not attr:
            raise ValueError(f"backend factory {factory!r} must look like 'module:attr'")
        _LAZY[name] = (module, (attr,))
        _FACTORIES.pop(name, None)
    else:
        _FACTORIES[name] = factory


def available_backends() -> list[str]:
    return sorted(set(_LAZY) | set(_FACTORIES))


def _resolve(name: str) -> Callable[..., Backend]:
    if name in _FACTORIES:
        return _FACTORIES[name]
    if name not in _LAZY:
        near = difflib.get_close_matches(name, available_backends(), n=3, cutoff=0.3)
        hint = f"; did you mean {near}?" if near else ""
        raise KeyError(f"unknown backend {name!r}{hint} (available: {available_backends()})")
    module_name, candidates = _LAZY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"backend {name!r} needs {module_name}, which failed to import ({exc}); "
            "for vLLM run `make install-vllm`"
        ) from exc
    table = getattr(module, "BACKENDS", None)
    if isinstance(table, dict) and name in table:
        return table[name]
    for attr in candidates:
        if hasattr(module, attr):
            return getattr(module, attr)
    raise ImportError(f"{module_name} defines none of {list(candidates)} for backend {name!r}")


def make_backend(
    name: str, model_path: str | None = None, *, learner: Any = None, **kwargs: Any
) -> Backend:
    """Build the backend `name` ("hf", "vllm", "vllm-server", "openai") for a model folder.

    ``learner`` (the in-process learner, when there is one) is passed to the factory as
    ``learner=``: ``hf`` generates with its module, the engines load ``model_path`` themselves
    and ignore it. A factory added with `register_backend` that is used for training accepts
    ``learner`` too. ``kwargs`` go to the backend unchanged.
    """
    factory = _resolve(name)
    if learner is None:
        return factory(model_path, **kwargs)
    return factory(model_path, learner=learner, **kwargs)
