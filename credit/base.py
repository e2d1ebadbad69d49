"""Credit-module contract: `Advantages`, the registry (`make`, `available`), shared helpers.

A credit module is a callable ``module(groups) -> Advantages``: a pure function of recorded
trajectory groups (plus step fields the trainer fills for the names in ``module.needs``). Modules
register by name with `register`; ``make(name, **overrides)`` builds one with its paper's defaults
and checks every override against its options dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from creditgym.credit.trajectory import TrajectoryGroup, total_steps

NORM_MODES = ("mean_norm", "mean_std_norm")


@dataclass
class Advantages:
    """One advantage per step, flat in (group, trajectory, step) order.

    ``spans`` optionally holds per-span advantages of the same length (HiPER: "switch",
    "subgoal", "action"); ``diagnostics`` holds scalars to log under ``credit/``.
    """

    values: np.ndarray
    spans: dict[str, np.ndarray] | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def per_trajectory(self, groups: Sequence[TrajectoryGroup]) -> list[list[np.ndarray]]:
        """Split `values` back into [group][trajectory] arrays."""
        out, pos = [], 0
        for g in groups:
            rows = []
            for t in g.trajectories:
                rows.append(self.values[pos : pos + len(t)])
                pos += len(t)
            out.append(rows)
        return out


def normalize(x: np.ndarray, mode: str, std: str = "population") -> np.ndarray:
    """norm over a set (ALGORITHMS.md): x - mean, or (x - mean) / (std + 1e-6).

    A set of one element gives 0. ``std`` is "population" (ddof=0) or "sample" (ddof=1).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size <= 1:
        return np.zeros_like(x)
    centered = x - x.mean()
    if mode == "mean_norm":
        return centered
    if mode == "mean_std_norm":
        ddof = 0 if std == "population" else 1
        return centered / (x.std(ddof=ddof) + 1e-6)
    raise ValueError(f"unknown normalisation mode {mode!r}; choose one of {NORM_MODES}")


def group_normalize(
    x: np.ndarray, group_ids: np.ndarray, mode: str, std: str = "population"
) -> np.ndarray:
    """`normalize` applied inside every group at once (vectorised with bincount).

    ``group_ids`` are dense integers 0..n_groups-1, one per element of ``x``. Groups of one
    element give 0.
    """
    x = np.asarray(x, dtype=np.float64)
    ids = np.asarray(group_ids, dtype=np.int64)
    if x.size == 0:
        return x.copy()
    counts = np.bincount(ids).astype(np.float64)
    means = np.bincount(ids, weights=x) / np.maximum(counts, 1)
    centered = x - means[ids]
    if mode == "mean_std_norm":
        ddof = 0 if std == "population" else 1
        sq = np.bincount(ids, weights=centered * centered)
        var = sq / np.maximum(counts - ddof, 1)
        out = centered / (np.sqrt(var)[ids] + 1e-6)
    elif mode == "mean_norm":
        out = centered
    else:
        raise ValueError(f"unknown normalisation mode {mode!r}; choose one of {NORM_MODES}")
    out[counts[ids] <= 1] = 0.0
    return out


def dense_ids(keys: Sequence[Any]) -> np.ndarray:
    """Map hashable keys to dense integer ids in first-seen order."""
    table: dict[Any, int] = {}
    return np.fromiter(
        (table.setdefault(k, len(table)) for k in keys), dtype=np.int64, count=len(keys)
    )


STD_MODES = ("population", "sample")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")


class CreditModule:
    """Base class: subclasses set `name`, `Config` (a dataclass) and implement `compute`."""

    name: ClassVar[str] = ""
    #: Step fields the trainer must fill first: "values", "entropies", "answer_logprobs".
    needs: ClassVar[frozenset[str]] = frozenset()
    Config: ClassVar[type]

    def __init__(self, config: Any | None = None, **overrides: Any):
        cfg = config if config is not None else self.Config()
        if overrides:
            known = [f.name for f in dataclasses.fields(cfg)]
            for key in overrides:
                if key not in known:
                    near = difflib.get_close_matches(key, known, n=3, cutoff=0.4)
                    hint = f"; did you mean {near}?" if near else ""
                    raise TypeError(
                        f"credit module {self.name!r} has no option {key!r}{hint} "
                        f"(options: {known})"
                    )
            cfg = dataclasses.replace(cfg, **overrides)
        self.config = cfg
        self.validate()

    def validate(self) -> None:
        """Check option values (override to add checks)."""

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        raise NotImplementedError

    def __call__(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        groups = list(groups)
        t0 = time.perf_counter()
        adv = self.compute(groups)
        elapsed = time.perf_counter() - t0
        n = total_steps(groups)
        if len(adv.values) != n:
            raise AssertionError(f"{self.name} returned {len(adv.values)} advantages for {n} steps")
        adv.diagnostics.update(summary_diagnostics(adv.values, groups, self.config))
        adv.diagnostics["time_ms"] = 1000.0 * elapsed
        return adv

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def summary_diagnostics(
    values: np.ndarray, groups: Sequence[TrajectoryGroup], config: Any
) -> dict[str, float]:
    """What every module logs: advantage mean/std, zero fraction, tied groups."""
    penalty = getattr(config, "invalid_penalty", 0.1)
    tied = 0
    for g in groups:
        returns = {round(t.episode_return(penalty), 9) for t in g.trajectories}
        tied += len(returns) <= 1
    return {
        "adv_mean": float(values.mean()) if len(values) else 0.0,
        "adv_std": float(values.std()) if len(values) else 0.0,
        "zero_adv_frac": float(np.mean(np.abs(values) < 1e-12)) if len(values) else 0.0,
        "tied_groups": float(tied),
        "num_groups": float(len(groups)),
        "num_steps": float(len(values)),
    }


_REGISTRY: dict[str, type[CreditModule]] = {}


def register(name: str) -> Callable[[type[CreditModule]], type[CreditModule]]:
    """Class decorator: make a credit module available as ``creditgym.credit.make(name)``."""

    def deco(cls: type[CreditModule]) -> type[CreditModule]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"credit module {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Names of every registered credit module."""
    return sorted(_REGISTRY)


def make(name: str, **overrides: Any) -> CreditModule:
    """Build a credit module by name with its defaults, replacing the given options."""
    if name not in _REGISTRY:
        near = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.3)
        hint = f"; did you mean {near}?" if near else ""
        raise KeyError(f"unknown credit module {name!r}{hint} (available: {available()})")
    return _REGISTRY[name](**overrides)
