"""Credit-module contract: `Advantages`, the registry (`make`, `available`), shared helpers.

A credit module is a callable ``module(groups) -> Advantages``: a pure function of recorded
trajectory groups (plus step fields the trainer fills for the names in ``module.needs``). Modules
register by name with `register`; ``make(name, **overrides)`` builds one with its paper's defaults
and checks every override against its options dataclass. A module that needs values declares its
value heads and where each is read (``value_heads``, positions from `READ_POSITIONS`); the learner
serves exactly those.

Statistics over the whole batch (z-scores, whitening, min-max) go through `batch_stats`, whose
partial sums pass through one reducer (`set_reducer`): the identity in one process, an all-reduce
in a data-parallel learner. Statistics inside one group stay local (a group lives on one rank).
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from creditgym.credit.returns import DEFAULT_INVALID_PENALTY
from creditgym.credit.trajectory import TrajectoryGroup, total_steps

NORM_MODES = ("mean_norm", "mean_std_norm")
STD_MODES = ("population", "sample")
#: Relative std below which a set counts as tied (its spread is float rounding, not signal).
TIE_RTOL = 1e-12

#: Where a value head reads the backbone's hidden state in a step's sequence:
#: "last_prompt_token" (the state the turn acts in) or "subgoal_end" (the last token of the
#: response's ``<subgoal>`` span; the last prompt token when the step has no such span).
READ_POSITIONS = ("last_prompt_token", "subgoal_end")


@dataclass
class Advantages:
    """One advantage per step, flat in (group, trajectory, step) order.

    ``spans`` optionally holds per-span advantages of the same length (HiPER: "switch",
    "subgoal", "action"); ``diagnostics`` holds scalars to log under ``credit/``.
    ``mask`` (bool per step, default all True) leaves a False step out of the loss entirely: the
    policy loss, every loss term (KL, entropy, ...), the value loss and the token counts that
    normalise them. ``weight`` (float per step, default 1) scales that step's contribution to the
    policy loss and its terms (the token-mean denominator is unchanged).
    """

    values: np.ndarray
    spans: dict[str, np.ndarray] | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    def check(self, n_steps: int) -> None:
        """Raise if any per-step array does not hold ``n_steps`` entries (or a weight is not
        finite)."""
        arrays = {"values": self.values, "mask": self.mask, "weight": self.weight}
        arrays.update({f"spans[{k!r}]": v for k, v in (self.spans or {}).items()})
        for name, arr in arrays.items():
            if arr is not None and len(arr) != n_steps:
                raise ValueError(f"Advantages.{name} has {len(arr)} entries for {n_steps} steps")
        if self.weight is not None and not np.all(np.isfinite(self.weight)):
            raise ValueError("Advantages.weight must be finite")

    def step_mask(self) -> np.ndarray:
        """`mask` as a bool array (all True when unset)."""
        if self.mask is None:
            return np.ones(len(self.values), dtype=bool)
        return np.asarray(self.mask, dtype=bool)

    def step_weight(self) -> np.ndarray:
        """`weight` as a float array (all 1 when unset)."""
        if self.weight is None:
            return np.ones(len(self.values), dtype=np.float64)
        return np.asarray(self.weight, dtype=np.float64)

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


#: ``reducer(partials, op)`` combines per-process partial statistics; ``op`` is "sum" or "max".
Reducer = Callable[[np.ndarray, str], np.ndarray]


def _local_reducer(partials: np.ndarray, op: str) -> np.ndarray:
    return partials


_reducer: Reducer = _local_reducer


def set_reducer(fn: Reducer | None) -> Reducer:
    """Route every `batch_stats` reduction through ``fn`` (None: back to one process); returns
    the previous reducer.

    ``fn(partials, op)`` gets a float64 array of this process's partial sums (``op="sum"``) or
    maxima (``op="max"``) and returns the elementwise combination over all processes, e.g. a
    ``torch.distributed.all_reduce``. Every process must then call the credit module on its
    share of the batch, so the calls line up.
    """
    global _reducer
    previous = _reducer
    _reducer = _local_reducer if fn is None else fn
    return previous


@dataclass(frozen=True)
class BatchStats:
    """Count, mean, sum of squared deviations from the mean (``m2``), min and max of a set."""

    count: int
    mean: float
    m2: float
    min: float
    max: float

    def std(self, ddof: int = 0) -> float:
        """Standard deviation (population for ``ddof=0``); 0 when count <= ddof."""
        return float(np.sqrt(self.m2 / (self.count - ddof))) if self.count > ddof else 0.0


def batch_stats(x: np.ndarray, mask: np.ndarray | None = None) -> BatchStats:
    """Statistics of ``x`` (the entries where ``mask`` is True) over the whole batch.

    Two passes, each reduced by the reducer (`set_reducer`): count and sum give the mean, then
    the squared deviations from that mean give ``m2``; min and max ride along. In one process
    the numbers equal numpy's ``mean``, ``std`` (ddof 0), ``min`` and ``max`` bit for bit. An
    empty set gives count 0, mean 0, min +inf and max -inf.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if mask is not None:
        x = x[np.asarray(mask, dtype=bool).reshape(-1)]
    count, total = _reducer(np.array([float(x.size), x.sum()]), "sum")
    mean = float(total / count) if count else 0.0
    d = x - mean
    (m2,) = _reducer(np.array([(d * d).sum()]), "sum")
    neg_min, hi = _reducer(
        np.array([-x.min(), x.max()]) if x.size else np.array([-np.inf, -np.inf]), "max"
    )
    return BatchStats(int(count), mean, float(m2), float(-neg_min), float(hi))


def whiten(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(x - mean) / (population std + 1e-6) over the whole batch (`batch_stats`); a set of one
    element or none gives 0. With ``mask``, only those entries are used and set; the rest are 0."""
    x = np.asarray(x, dtype=np.float64)
    stats = batch_stats(x, mask)
    out = np.zeros_like(x)
    if stats.count <= 1:
        return out
    scale = stats.std() + 1e-6
    if mask is None:
        return (x - stats.mean) / scale
    m = np.asarray(mask, dtype=bool)
    out[m] = (x[m] - stats.mean) / scale
    return out


def normalize(x: np.ndarray, mode: str, std: str = "population") -> np.ndarray:
    """norm over a set (ALGORITHMS.md): x - mean, or (x - mean) / (std + 1e-6).

    A set of one element gives 0. ``std`` is "population" (ddof=0) or "sample" (ddof=1). A set
    tied up to rounding (std <= `TIE_RTOL` x (|mean| + 1), e.g. returns summed in a different
    order) gives 0 under "mean_std_norm" rather than its rounding residue / 1e-6.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size <= 1:
        return np.zeros_like(x)
    centered = x - x.mean()
    if mode == "mean_norm":
        return centered
    if mode == "mean_std_norm":
        ddof = 0 if std == "population" else 1
        sd = x.std(ddof=ddof)
        if sd <= TIE_RTOL * (abs(x.mean()) + 1.0):
            return np.zeros_like(x)
        return centered / (sd + 1e-6)
    raise ValueError(f"unknown normalisation mode {mode!r}; choose one of {NORM_MODES}")


def group_normalize(
    x: np.ndarray, group_ids: np.ndarray, mode: str, std: str = "population"
) -> np.ndarray:
    """`normalize` applied inside every group at once (vectorised with bincount).

    ``group_ids`` are dense integers 0..n_groups-1, one per element of ``x``. Groups of one
    element give 0, and so do groups tied up to rounding under "mean_std_norm" (`normalize`).
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
        sd = np.sqrt(sq / np.maximum(counts - ddof, 1))
        out = centered / (sd[ids] + 1e-6)
        out[(sd <= TIE_RTOL * (np.abs(means) + 1.0))[ids]] = 0.0
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


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise a ValueError naming the option and its valid values when ``value`` is not one."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")


@dataclass(frozen=True)
class CreditOptions:
    """Base of every module's options dataclass; `CreditModule` calls `check` on construction."""

    def check(self) -> None:
        """Raise a clear error for an invalid option value (subclasses extend it)."""


@dataclass(frozen=True)
class NormOptions(CreditOptions):
    """The normalisation options ("norm" in ALGORITHMS.md) and their checks, in one place.

    A module redeclares a field to change its default (e.g. HGPO's population std).
    """

    mode: str = "mean_std_norm"
    """Normalisation: "mean_std_norm" ((x - mean) / (std + 1e-6)) or "mean_norm" (x - mean)."""
    std: str = "sample"
    """Which std divides: "sample" (ddof=1, as torch.std) or "population" (ddof=0)."""

    def check(self) -> None:
        super().check()
        check_choice("mode", self.mode, NORM_MODES)
        check_choice("std", self.std, STD_MODES)


class CreditModule:
    """Base class: subclasses set `name`, `Config` (a dataclass) and implement `compute`."""

    name: ClassVar[str] = ""
    #: Step fields the trainer must fill first: "values", "entropies", "answer_logprobs".
    needs: ClassVar[frozenset[str]] = frozenset()
    #: Value heads the module reads from ``Step.values`` when it needs values: head name ->
    #: where the head reads (one of `READ_POSITIONS`). A module may set it per instance.
    value_heads: ClassVar[Mapping[str, str]] = {}
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
        check = getattr(cfg, "check", None)
        if check is not None:
            check()
        self.validate()

    def validate(self) -> None:
        """Module-level checks and derived attributes, after the options' own `check`."""

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
        adv.check(n)
        adv.diagnostics.update(summary_diagnostics(adv.values, groups, self.config))
        adv.diagnostics["time_ms"] = 1000.0 * elapsed
        return adv

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def summary_diagnostics(
    values: np.ndarray, groups: Sequence[TrajectoryGroup], config: Any
) -> dict[str, float]:
    """What every module logs: advantage mean/std, zero fraction, tied groups."""
    penalty = getattr(config, "invalid_penalty", DEFAULT_INVALID_PENALTY)
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
