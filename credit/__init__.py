"""Trajectory data model, trajectory graph, and step-level credit modules.

``creditgym.credit.make(name, **overrides)`` builds a registered module; ``creditgym.credit.available()`` lists them.
A module is a pure function of recorded `TrajectoryGroup`s returning `Advantages`.
"""

# Importing each module registers it.
from creditgym.credit import (  # noqa: F401
    empg,
    gigpo,
    grpo,
    hgpo,
    hiper,
    igpo,
    ppo,
    r3l,
    rloo,
    salt,
    spo_chain,
    spo_tree,
    sspo,
    stratified_grpo,
    tree_grpo,
)
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
