"""Trajectory data model, trajectory graph, and step-level credit modules.

``creditgym.credit.make(name, **overrides)`` builds a registered module; ``creditgym.credit.available()`` lists them.
A module is a pure function of recorded `TrajectoryGroup`s returning `Advantages`.
"""

from creditgym.credit import empg, gigpo, grpo, hgpo, hiper, igpo, ppo, rloo, salt  # noqa: F401  (registration)
from creditgym.credit import r3l, spo_chain, spo_tree, tree_grpo  # noqa: F401  (issue 18)
from creditgym.credit import sspo, stratified_grpo  # noqa: F401  (issue 19)
from creditgym.credit.base import (
    READ_POSITIONS,
    Advantages,
    BatchStats,
    CreditModule,
    CreditOptions,
    NormOptions,
    available,
    batch_stats,
    group_normalize,
    make,
    normalize,
    register,
    set_reducer,
    whiten,
)
from creditgym.credit.graph import TrajectoryGraph
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, discounted_returns, gae, leave_one_out
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup, flat_steps

__all__ = [
    "DEFAULT_INVALID_PENALTY",
    "READ_POSITIONS",
    "Advantages",
    "BatchStats",
    "CreditModule",
    "CreditOptions",
    "NormOptions",
    "Step",
    "Trajectory",
    "TrajectoryGraph",
    "TrajectoryGroup",
    "available",
    "batch_stats",
    "discounted_returns",
    "flat_steps",
    "gae",
    "group_normalize",
    "leave_one_out",
    "make",
    "normalize",
    "register",
    "set_reducer",
    "whiten",
]
