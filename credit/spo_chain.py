"""SPO-chain: segment advantages from Monte-Carlo boundary values (Segment Policy Optimization,
Guo et al. 2025, arXiv 2505.23564; reference code AIFrameResearch/SPO at b9fc6a2,
``math_episode_generator_with_mc_advantages.py``). Spec: shared/ALGORITHMS-2.md, "SPO".

The paper is single-turn (math CoT; a segment is a token span). Agent adaptation (ours): a
segment is one or more whole turns. The rollout strategy ``mc_chain`` restores the env at every
segment boundary c_k, samples N continuations under the current policy (not trained on) and
records V(s_{c_k}) = mean continuation return on the boundary step as ``Step.mc_value``. A step
whose ``mc_value`` is set starts a segment; step 0 always starts one. With gamma = 1 and
V(terminal) = 0, for every step t of segment k (boundaries c_k < c_{k+1}):

    A_{i,t} = sum_{u in seg k} r_{i,u} + V(s_{c_{k+1}}) - V(s_{c_k})

which is the reference's ``V(this cutpoint) - V(previous)`` when the only reward is terminal.

V(s_0) (``v0``): "group_loo" (default, **[recon]**): the mean return of the other G - 1 rollouts
of the group, a free MC estimate of V(s_0) (a group of one: the first segment gets A = 0);
"mc": step 0's ``mc_value`` (required); "ref": step 0's ``mc_value`` when recorded, else the
first segment gets A = 0 (the reference has V(s_0) only when the first token is low-probability).

Probability mask and whitening (reference ``use_prob_mask`` and ``whiten_advantages``): only
tokens with p_old < ``prob_mask`` (0.9) carry the advantage and enter the whitening statistics;
the learner option ``learner.prob_mask`` masks the other tokens out of the loss, the KL and the
token counts. Here a step's weight in the statistics is its number of such tokens, counted from
``Step.sampler_logprobs``; a step with log-probs but none below the threshold gets
``Advantages.mask`` False. A step without log-probs (tabular agents) counts as one token and is
never masked (deviation: a tabular action has no token probabilities). Whitening is over the
whole batch, (A - mean) / sqrt(var + 1e-8) with the unbiased variance (the reference's
``masked_whiten``), through `batch_stats` so it is exact across data-parallel ranks.

Deviations from paper/code: turn-level segments and boundaries (``cutpoint`` "turn" or
"low_prob" is the strategy's choice, **[recon]** for agents); intermediate rewards enter the
segment sum; ``v0 = "group_loo"`` default; tabular steps are unmasked. The paper body was not
available: equations from the reference code (ALGORITHMS-2.md, "Not verified / open").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.credit.base import (
    Advantages,
    CreditModule,
    CreditOptions,
    batch_stats,
    check_choice,
    register,
)
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup

V0_MODES = ("group_loo", "mc", "ref")


@dataclass(frozen=True)
class SPOChainConfig(CreditOptions):
    v0: str = "group_loo"
    """V(s_0): "group_loo" (mean return of the other group members), "mc" (step 0's mc_value,
    required) or "ref" (step 0's mc_value if recorded, else the first segment gets 0)."""
    prob_mask: float | None = 0.9
    """Tokens with p_old >= this carry no advantage and leave the whitening statistics
    (None: every token counts). Pair with ``learner.prob_mask`` for the loss."""
    whiten: bool = True
    """Whiten the advantages over the batch's counted tokens (the reference's default)."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        super().check()
        check_choice("v0", self.v0, V0_MODES)
        if self.prob_mask is not None and not 0.0 < self.prob_mask <= 1.0:
            raise ValueError(f"prob_mask={self.prob_mask!r} must be in (0, 1] or None")


def token_counts(steps: Sequence[Step], prob_mask: float | None) -> np.ndarray:
    """Counted tokens per step: those with p_old < ``prob_mask`` (all when None); a step
    without recorded log-probs counts as one token."""
    out = np.ones(len(steps), dtype=np.int64)
    for i, s in enumerate(steps):
        lp = s.sampler_logprobs
        if lp is None or len(lp) == 0:
            continue
        lp = np.asarray(lp, dtype=np.float64)
        out[i] = lp.size if prob_mask is None else int(np.sum(np.exp(lp) < prob_mask))
    return out


def segment_advantages(
    traj: Trajectory, v0: float | None, invalid_penalty: float = DEFAULT_INVALID_PENALTY
) -> np.ndarray:
    """A per step of one trajectory from its boundary values (``Step.mc_value`` at t >= 1 and
    ``v0`` at t = 0; None = unknown, the first segment then gets 0)."""
    r = traj.rewards(invalid_penalty)
    n = len(r)
    starts = [0] + [t for t in range(1, n) if traj.steps[t].mc_value is not None]
    values = [v0] + [float(traj.steps[t].mc_value) for t in starts[1:]] + [0.0]
    out = np.zeros(n, dtype=np.float64)
    for k, c in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else n
        if values[k] is None:
            continue
        out[c:end] = r[c:end].sum() + values[k + 1] - values[k]
    return out


@register("spo_chain")
class SPOChain(CreditModule):
    """Segment advantages from MC values at segment boundaries (needs a branching rollout)."""

    Config = SPOChainConfig
    needs = frozenset({"branching"})

    def _v0(self, group: TrajectoryGroup, i: int) -> float | None:
        c = self.config
        traj = group.trajectories[i]
        recorded = traj.steps[0].mc_value if traj.steps else None
        if c.v0 == "mc":
            if recorded is None:
                raise ValueError("spo_chain v0='mc' needs Step.mc_value on step 0")
            return float(recorded)
        if c.v0 == "ref":
            return None if recorded is None else float(recorded)
        others = [t.episode_return(c.invalid_penalty) for j, t in enumerate(group) if j != i]
        return float(np.mean(others)) if others else None

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        parts = [
            segment_advantages(t, self._v0(g, i), c.invalid_penalty)
            for g in groups
            for i, t in enumerate(g.trajectories)
        ]
        values = np.concatenate(parts) if parts else np.zeros(0)
        steps = [s for g in groups for t in g.trajectories for s in t.steps]
        counts = token_counts(steps, c.prob_mask)
        mask = counts > 0
        if c.whiten and values.size:
            stats = batch_stats(np.repeat(values, counts))
            if stats.count > 1:
                var = stats.m2 / (stats.count - 1)
                values = np.where(mask, (values - stats.mean) / np.sqrt(var + 1e-8), 0.0)
            else:
                values = np.zeros_like(values)
        diagnostics = {
            "boundaries": float(sum(s.mc_value is not None for s in steps)),
            "masked_steps": float(np.sum(~mask)),
        }
        return Advantages(values=values, mask=None if mask.all() else mask, diagnostics=diagnostics)
