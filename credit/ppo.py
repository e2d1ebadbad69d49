"""PPO's critic baseline: GAE over steps from a value head (Schulman et al. 2016,
arXiv 1506.02438), the "PPO" rows of the GiGPO / HiPER papers.

For trajectory i with step rewards r_t (env reward minus the invalid-action penalty) and value
estimates V_t = ``Step.values["v"]`` (filled by the trainer from the value head on the policy
backbone):

    delta_t = r_t + gamma V_{t+1} - V_t          (V_T = 0: the episode ended, truncation included)
    A_t     = delta_t + gamma lambda A_{t+1}
    target_t = A_t + V_t                         (the value loss regresses V_t on it)

gamma = 1.0 and lambda = 0.95 by default. ``whiten=True`` (default, as verl's PPO) z-scores the
advantages over the whole batch (population std, `creditgym.credit.base.whiten`); the value
targets are never whitened. The value head is read at the last prompt token.
A truncated episode also bootstraps 0, as verl-agent does at ``max_steps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from creditgym.credit.base import Advantages, CreditModule, CreditOptions, register, whiten
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, gae
from creditgym.credit.trajectory import Step, TrajectoryGroup


@dataclass
class CriticAdvantages(Advantages):
    """`Advantages` plus value-regression targets by head name (NaN where a head is not trained
    at a step, e.g. HiPER's V_high away from segment boundaries)."""

    targets: dict[str, np.ndarray] = field(default_factory=dict)


def step_value(step: Step, head: str, where: str) -> float:
    """``step.values[head]`` or a clear error saying the trainer has not filled it."""
    if step.values is None or head not in step.values:
        raise ValueError(
            f"{where} needs Step.values[{head!r}] on every step (got {step.values!r}); the trainer "
            "fills it from the value head before calling the module (needs={'values'})"
        )
    return float(step.values[head])


@dataclass(frozen=True)
class PPOConfig(CreditOptions):
    gamma: float = 1.0
    """Discount of the step rewards."""
    lam: float = 0.95
    """GAE lambda: 1 is the Monte-Carlo return minus V, 0 the one-step TD error."""
    head: str = "v"
    """Name of the value head in `Step.values`."""
    whiten: bool = True
    """z-score the advantages over the batch (verl's PPO does)."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")


@register("ppo")
class PPO(CreditModule):
    """GAE advantages from a learned value head; returns value targets for the value loss."""

    Config = PPOConfig
    needs = frozenset({"values"})

    def validate(self) -> None:
        self.value_heads = {self.config.head: "last_prompt_token"}

    def compute(self, groups: Sequence[TrajectoryGroup]) -> CriticAdvantages:
        c = self.config
        advs, targets = [], []
        for g in groups:
            for traj in g.trajectories:
                if not traj.steps:
                    continue
                v = np.array([step_value(s, c.head, "ppo") for s in traj.steps])
                nxt = np.append(v[1:], 0.0)
                a = gae(traj.rewards(c.invalid_penalty), v, nxt, c.gamma, c.lam)
                advs.append(a)
                targets.append(a + v)
        raw = np.concatenate(advs) if advs else np.zeros(0)
        target = np.concatenate(targets) if targets else np.zeros(0)
        values = whiten(raw) if c.whiten else raw
        diagnostics = {"raw_adv_mean": float(raw.mean()) if raw.size else 0.0}
        diagnostics["value_target_mean"] = float(target.mean()) if target.size else 0.0
        return CriticAdvantages(values=values, targets={c.head: target}, diagnostics=diagnostics)
