"""The recorded data every credit module reads: `Step`, `Trajectory`, `TrajectoryGroup`.

Plain dataclasses, no torch: token ids and log-probs are lists or numpy arrays. A group holds the
G trajectories of one task instance (same task, same seed). `Step.state_key` is the key of the
state the action was taken in: from `reset`'s info at t = 0, then from the previous step's info.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, discounted_returns

if TYPE_CHECKING:
    from creditgym.credit.graph import TrajectoryGraph

__all__ = [
    "DEFAULT_INVALID_PENALTY",
    "ROLES",
    "Step",
    "Trajectory",
    "TrajectoryGroup",
    "discounted_returns",
    "flat_steps",
    "total_steps",
]


#: `Trajectory.role` values: a rollout from reset, an R^3L retry (distilled: guidance removed
#: from its prompts) and the same retry with guidance, a reflection, a branch continuation, an MC
#: continuation (never trained on).
ROLES = ("base", "retry", "retry_guided", "reflection", "replayed", "mc")


@dataclass
class Step:
    """One agent turn: the state it saw, what it did, and what came back."""

    state_key: str
    action: str
    reward: float
    valid: bool = True
    next_state_key: str = ""
    observation: str = ""
    #: The admissible actions of the state the action was taken in (None if the env has none).
    admissible_actions: list[str] | None = None
    #: Raw model output (the parsed `action` is what the env received).
    text: str = ""
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    # Token-level record of an LLM step (None for tabular agents).
    prompt_ids: Sequence[int] | None = None
    response_ids: Sequence[int] | None = None
    #: Log-probs of `response_ids` under the sampling policy (the generation backend).
    sampler_logprobs: Sequence[float] | None = None
    #: Character or token spans of the response parts (HiPER: switch / subgoal / action).
    spans: dict[str, Any] | None = None
    #: Version of the policy that sampled this step (today: the training iteration that
    #: collected it; asynchronous rollouts may train on steps of an older version).
    policy_version: int | None = None
    # Fields filled on demand by the trainer before a credit module that `needs` them runs.
    #: Per-token entropies of the response under the old policy (EMPG).
    entropies: np.ndarray | None = None
    #: Value estimates, by head name (PPO: {"v": ...}; HiPER: {"high", "low", "term"}).
    values: dict[str, float] | None = None
    #: Mean log-prob of the ground-truth answer before and after this turn (IGPO).
    answer_logprob_before: float | None = None
    answer_logprob_after: float | None = None
    #: Free-form extras (e.g. HiPER's parsed switch/subgoal).
    extras: dict[str, Any] = field(default_factory=dict)
    # Branching rollouts (ALGORITHMS-2.md, "Interfaces this wave adds"); None off a tree.
    #: Tree node this step belongs to: a prefix step shared by several leaves has one node id.
    node_id: str | None = None
    #: Node of the parent segment (None at the root's children and off a tree).
    parent_node_id: str | None = None
    #: SPO-chain: Monte-Carlo estimate of V(state before this step) when a segment starts here.
    mc_value: float | None = None

    def penalized_reward(self, invalid_penalty: float = DEFAULT_INVALID_PENALTY) -> float:
        """r_t as ALGORITHMS.md defines it: the env reward minus the invalid-action penalty."""
        return float(self.reward) - (0.0 if self.valid else invalid_penalty)


@dataclass
class Trajectory:
    """One episode of one task; its steps in order."""

    steps: list[Step] = field(default_factory=list)
    task_id: str = ""
    seed: int | None = None
    won: bool = False
    task_type: str = "default"
    #: Set when an infrastructure error ended the episode (it is then never trained on).
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # Branching rollouts (ALGORITHMS-2.md, "Interfaces this wave adds").
    #: The tree this trajectory is a leaf of (Tree-GRPO, SPO-tree); None off a tree.
    tree_id: str | None = None
    #: What the trajectory is: one of `ROLES` ("base" for an ordinary rollout).
    role: str = "base"
    #: R^3L / branches: the step the trajectory leaves its source at (steps before it are the
    #: source's recorded prefix); None for a rollout from reset.
    pivot: int | None = None
    #: R^3L: id shared by a base trajectory and its retries.
    pair_id: str | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def rewards(self, invalid_penalty: float = DEFAULT_INVALID_PENALTY) -> np.ndarray:
        return np.array([s.penalized_reward(invalid_penalty) for s in self.steps], dtype=np.float64)

    def episode_return(self, invalid_penalty: float = DEFAULT_INVALID_PENALTY) -> float:
        """R_i = sum_t r_{i,t}."""
        return float(self.rewards(invalid_penalty).sum())

    def discounted_returns(
        self, gamma: float, invalid_penalty: float = DEFAULT_INVALID_PENALTY
    ) -> np.ndarray:
        """Rhat_t = r_t + gamma * Rhat_{t+1}, computed backwards in one pass."""
        return discounted_returns(self.rewards(invalid_penalty), gamma)


@dataclass
class TrajectoryGroup:
    """The G trajectories of one task instance (same task id, same seed)."""

    trajectories: list[Trajectory] = field(default_factory=list)
    task_id: str = ""
    seed: int | None = None
    env_id: str = ""
    _graph: TrajectoryGraph | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.trajectories)

    def __iter__(self):
        return iter(self.trajectories)

    @property
    def num_steps(self) -> int:
        return sum(len(t) for t in self.trajectories)

    def graph(self) -> TrajectoryGraph:
        """The group's `TrajectoryGraph`, built on first use and cached: every module that
        groups steps reads this one object (rebuilt only if the group's step count changed)."""
        if self._graph is None or self._graph.num_steps != self.num_steps:
            from creditgym.credit.graph import TrajectoryGraph

            self._graph = TrajectoryGraph.from_group(self)
        return self._graph


def flat_steps(groups: Sequence[TrajectoryGroup]) -> list[Step]:
    """All steps in the canonical (group, trajectory, step) order of `Advantages.values`."""
    return [s for g in groups for t in g.trajectories for s in t.steps]


def total_steps(groups: Sequence[TrajectoryGroup]) -> int:
    return sum(g.num_steps for g in groups)
