"""Trackers: state kept across iterations that hands values to a credit module, chosen by name.

A tracker sees every iteration through three hooks (each optional, all duck-typed; ``ctx`` is a
`creditgym.trainers.recipes.IterationContext`):

- ``before_credit(groups, ctx)``: annotate the groups (e.g. put a per-task baseline in each
  trajectory's ``info``); return new groups or None to keep them;
- ``after_credit(groups, adv, ctx)``: read the credit module's output;
- ``after_update(groups, adv, ctx)``: read the updated policy (``ctx.agent``) and update state.

Its whole state is in ``state_dict()`` / ``load_state_dict(state)``, which checkpoints carry, so a
resumed run continues exactly. ``tracker.name`` names one in a config; `available()` lists them
and ``make(name, **options)`` builds one. ``provides`` lists the credit-module ``needs`` a tracker
satisfies ("task_baseline").

``sspo_value``: Single-stream Policy Optimization's per-task value tracker (arXiv 2509.13232;
verl ``recipe/spo``), with the KL-adaptive decay (see `SSPOValueTracker`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from creditgym.credit.returns import DEFAULT_INVALID_PENALTY
from creditgym.credit.trajectory import TrajectoryGroup
from creditgym.trainers.registry import Registry

__all__ = [
    "BASELINE_KEY",
    "Plugin",
    "SSPOTrackerOptions",
    "SSPOValueTracker",
    "Tracker",
    "available",
    "make",
    "register_tracker",
    "task_key",
]

#: Where a tracker puts a trajectory's per-task baseline (``Trajectory.info[BASELINE_KEY]``).
BASELINE_KEY = "task_baseline"


def task_key(group: TrajectoryGroup, split: str = "train") -> str:
    """The tracker's key of a group's task: env id, split and task id."""
    return f"{group.env_id}|{split}|{group.task_id}"


class Plugin:
    """Base of trackers and buffers: hooks that do nothing and a named, checked state."""

    #: Registry name.
    name: ClassVar[str] = ""
    #: "tracker" or "buffer".
    kind: ClassVar[str] = ""
    #: Credit-module ``needs`` this plug-in satisfies.
    provides: ClassVar[frozenset[str]] = frozenset()
    #: Whether it only makes sense on groups of several trajectories of one task.
    group_based: ClassVar[bool] = False

    def before_credit(self, groups: list[TrajectoryGroup], ctx: Any) -> list | None:
        return None

    def after_credit(self, groups: list[TrajectoryGroup], adv: Any, ctx: Any) -> None:
        return None

    def after_update(self, groups: list[TrajectoryGroup], adv: Any, ctx: Any) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)

    def _check_state(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(
                f"the checkpoint's {self.kind} is {state.get('name')!r}, this run's is {self.name!r}"
            )


class Tracker(Plugin):
    """A tracker (module docstring)."""

    kind: ClassVar[str] = "tracker"


_TRACKERS: Registry[type[Tracker]] = Registry("tracker", attr="name")

#: Class decorator: register a `Tracker` under a name (``tracker.name``).
register_tracker = _TRACKERS.register
#: Registered trackers (``tracker.name`` values).
available = _TRACKERS.available


def tracker_class(name: str) -> type[Tracker]:
    """The class registered as ``name`` (an unknown name lists the registered ones)."""
    return _TRACKERS.get(name)


def make(name: str, **options: Any) -> Tracker:
    """Build the tracker registered as ``name`` with ``options``."""
    return _TRACKERS.get(name)(**options)


# ----------------------------------------------------------------------------- sspo_value
@dataclass(frozen=True)
class SSPOTrackerOptions:
    """Options of `SSPOValueTracker` (defaults: verl ``recipe/spo``)."""

    d_half: float = 0.06
    """Drift at which the decay halves: rho = 2^(-D / d_half)."""
    rho_min: float = 0.875
    """Lower clip of rho (ref ``clip_lower``)."""
    rho_max: float = 0.96
    """Upper clip of rho (ref)."""
    prior_value: float = 0.5
    """v of a task never seen (the ref's alpha = beta = 0.5 with offline_N = 0)."""
    prior_count: float = 1.0
    """N_eff of a task never seen (1 with offline_N = 0)."""
    drift: str = "auto"
    """"kl": D = mean |log pi_now - log pi_then| on the task's last stored sample (needs an agent
    with ``probs(state_key, actions)``); "none": D = 0 (rho = clamp(1)); "auto": "kl" when the
    agent can score, else "none"."""
    duplicates: str = "sum"
    """Several samples of one task in a batch: "sum" decays once and adds them all (creditgym);
    "last" writes back per sample so the last one wins (the ref)."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid (r = the return)."""

    def check(self) -> None:
        if self.d_half <= 0:
            raise ValueError(f"d_half must be > 0, got {self.d_half}")
        if not 0 < self.rho_min <= self.rho_max <= 1:
            raise ValueError(
                f"need 0 < rho_min <= rho_max <= 1, got {self.rho_min}, {self.rho_max}"
            )
        if self.prior_count <= 0:
            raise ValueError(f"prior_count must be > 0, got {self.prior_count}")
        if self.drift not in ("auto", "kl", "none"):
            raise ValueError(f"drift={self.drift!r} is not valid; choose auto, kl or none")
        if self.duplicates not in ("sum", "last"):
            raise ValueError(f"duplicates={self.duplicates!r} is not valid; choose sum or last")


def _logprobs(agent: Any, sample: list[tuple[str, list[str], str]]) -> np.ndarray:
    """log pi(a | s) of each (state key, admissible actions, action) under a tabular agent."""
    out = []
    for key, acts, action in sample:
        p = agent.probs(key, acts)
        out.append(float(np.log(max(p[acts.index(action)], 1e-300))))
    return np.array(out, dtype=np.float64)


@register_tracker("sspo_value")
class SSPOValueTracker(Tracker):
    """Per-task value v(x) = S / N with a drift-adaptive decay (Single-stream PO).

    Per task x: ``S <- rho S + r``, ``N <- rho N + 1`` (r = the trajectory's return), the Beta
    tracker's update written for any reward; v = S / N. ``before_credit`` hands each trajectory
    v(x) before this batch's update (``Trajectory.info["task_baseline"]``) for the ``sspo``
    credit module; ``after_update`` measures the drift D(x) = mean over the task's last stored
    sample of |log pi_now(a|s) - log pi_then(a|s)| (pi_then: the policy right after the previous
    visit's update; 0 on the first visit), sets rho = clamp(2^(-D / d_half), rho_min, rho_max),
    updates (S, N) and stores this visit's last sample with its log-probs under the new policy.
    """

    provides: ClassVar[frozenset[str]] = frozenset({BASELINE_KEY})
    Options: ClassVar[type] = SSPOTrackerOptions

    def __init__(self, **options: Any):
        known = {f.name for f in dataclasses.fields(SSPOTrackerOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"tracker 'sspo_value' has no option(s) {unknown}; options: {sorted(known)}"
            )
        self.options = SSPOTrackerOptions(**options)
        self.options.check()
        #: task key -> [S, N]
        self.stats: dict[str, list[float]] = {}
        #: task key -> (last sample [(state key, actions, action)], its log-probs after update)
        self.stored: dict[str, tuple[list[tuple[str, list[str], str]], list[float]]] = {}
        #: task key -> last rho applied (diagnostic)
        self.last_rho: dict[str, float] = {}

    # ------------------------------------------------------------------ values
    def value(self, key: str) -> float:
        s, n = self.stats.get(
            key, (self.options.prior_value * self.options.prior_count, self.options.prior_count)
        )
        return float(s / n)

    def count(self, key: str) -> float:
        return float(self.stats.get(key, (0.0, self.options.prior_count))[1])

    def rho(self, drift: float) -> float:
        o = self.options
        return float(np.clip(2.0 ** (-drift / o.d_half), o.rho_min, o.rho_max))

    def _drift_mode(self, agent: Any) -> str:
        if self.options.drift != "auto":
            return self.options.drift
        return "kl" if hasattr(agent, "probs") else "none"

    def drift(self, key: str, agent: Any) -> float:
        """D(x) of task ``key`` under ``agent`` now (0 on a first visit or with drift "none")."""
        if key not in self.stored or self._drift_mode(agent) == "none":
            return 0.0
        sample, then = self.stored[key]
        if not sample:
            return 0.0
        now = _logprobs(agent, sample)
        return float(np.mean(np.abs(now - np.asarray(then))))

    def update(self, key: str, returns: Sequence[float], drift: float) -> None:
        """Decay task ``key``'s (S, N) by rho(drift) and add ``returns`` (module docstring)."""
        rho = self.rho(drift)
        o = self.options
        s, n = self.stats.get(key, [o.prior_value * o.prior_count, o.prior_count])
        if o.duplicates == "sum":
            s, n = rho * s + float(np.sum(returns)), rho * n + len(returns)
        else:  # the ref: each sample written back from the same start, the last one wins
            base = (s, n)
            for r in returns:
                s, n = rho * base[0] + float(r), rho * base[1] + 1
        self.stats[key] = [float(s), float(n)]
        self.last_rho[key] = rho

    # ------------------------------------------------------------------ hooks
    def before_credit(self, groups: list[TrajectoryGroup], ctx: Any) -> None:
        for g in groups:
            v = self.value(task_key(g))
            for t in g.trajectories:
                t.info[BASELINE_KEY] = v
        return None

    def after_update(self, groups: list[TrajectoryGroup], adv: Any, ctx: Any) -> None:
        agent = getattr(ctx, "agent", None)
        scorable = agent is not None and self._drift_mode(agent) == "kl"
        by_task: dict[str, list[TrajectoryGroup]] = {}
        for g in groups:
            by_task.setdefault(task_key(g), []).append(g)
        for key, gs in by_task.items():
            trajs = [t for g in gs for t in g.trajectories]
            if not trajs:
                continue
            returns = [t.episode_return(self.options.invalid_penalty) for t in trajs]
            self.update(key, returns, self.drift(key, agent) if scorable else 0.0)
            if scorable:
                last = trajs[-1]
                sample = [
                    (s.state_key, list(s.admissible_actions), s.action)
                    for s in last.steps
                    if s.admissible_actions and s.action in s.admissible_actions
                ]
                self.stored[key] = (sample, _logprobs(agent, sample).tolist())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "options": dataclasses.asdict(self.options),
            "stats": {k: list(v) for k, v in self.stats.items()},
            "stored": {k: [[list(x) for x in s], list(lp)] for k, (s, lp) in self.stored.items()},
            "last_rho": dict(self.last_rho),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self.stats = {k: [float(a), float(b)] for k, (a, b) in state["stats"].items()}
        self.stored = {
            k: ([(str(x[0]), list(x[1]), str(x[2])) for x in s], [float(v) for v in lp])
            for k, (s, lp) in state["stored"].items()
        }
        self.last_rho = {k: float(v) for k, v in state.get("last_rho", {}).items()}
