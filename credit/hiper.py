"""HiPER: hierarchical plan/execute with hierarchical advantage estimation (arXiv 2602.16165).

Every turn the policy writes ``<switch>KEEP|SWITCH</switch><subgoal>...</subgoal><action>...
</action>`` (parsed by the agent into ``Step.extras["switch"]`` and ``["subgoal"]``, or the LLM agent's
``Step.extras["parsed"]``). Turn 0 and
every SWITCH turn start a segment; segment k covers turns b_k .. e_k - 1 and lasts d_k turns.

Rewards: r_t = env reward - invalid-action penalty + keep penalty + consistency penalty, the two
penalties signed as in the reference (``hiper_hae/core_hae.py``; negative values penalise):

- keep penalty p (``keep_penalty``, -0.3 as the reference's ALFWorld run, -3.5 for WebShop):
  ``keep_mode="normalized"`` (default, the reference config's) gives a trajectory of T > 1 turns
  with K KEEP turns p x (K / T) / K = p / T on each KEEP turn, so the trajectory pays p x keep
  ratio (nothing when T = 1); ``"fixed"`` (alias ``"per_turn"``) adds p to every KEEP turn. A KEEP
  on turn 0 is a KEEP like any other (turn 0 still starts a segment);
- consistency penalty (``consistency_penalty``, -0.3) on a KEEP turn t >= 1 whose subgoal text
  differs from turn t - 1's; not charged when either subgoal is missing.

Values (``values="critic"``, the reference): V_high at boundary turns, V_low and V_term at every
turn, from three heads on the policy backbone (`creditgym.trainers.heads`). With gamma the discount,

    low level (inside segment k, lambda_turn = 1):
        delta_t = r_t + gamma V'_t - V_low(t),  V'_t = V_low(t+1) inside the segment and
                  V_high(b_{k+1}) (0 after the last segment) at its last turn
        A_low_t = delta_t + gamma lambda_turn A_low_{t+1}   (reset at the segment end)
    high level (semi-MDP over segments, lambda_seg = 0.95):
        R_k = sum_{t in k} gamma^{t - b_k} r_t
        delta_k = R_k + gamma^{d_k} V_high(b_{k+1}) - V_high(b_k)
        A_high_k = delta_k + gamma^{d_k} lambda_seg A_high_{k+1}
    switch:
        G_t = sum_{u=t}^{e_k - 1} gamma^{u-t} r_u + gamma^{e_k - t} V_high(b_{k+1});
        A_term_t = G_t - V_term(t)

A truncated (not terminated) episode bootstraps after its last turn from its own value estimates
instead of 0 (``bootstrap_truncated``, as the reference's ALFWorld run): the low level from V_low of
the last turn, the high level and the switch returns from V_high of the last segment's start.

Value targets (returned in `CriticAdvantages.targets`): A_high + V_high at boundaries (NaN
elsewhere), A_low + V_low, and G_t. Each advantage type is z-scored over the batch (population
std). Routing (`Advantages.spans`): "switch" <- A_term, "subgoal" <- A_high on boundary turns,
"action" <- A_low; ``values`` (the one-scalar-per-step view) is A_low.

``values="group"`` is the critic-free variant: every V is replaced by the group mean of the
matching Monte-Carlo return (V_high: the discounted return-to-go over the group's boundary turns;
V_low and V_term: over all the group's turns), so HiPER needs no value heads; a truncated
episode's bootstrap is then that group mean. With ``group_bootstrap="return"`` a segment instead
bootstraps with the trajectory's own Monte-Carlo return from the next boundary; delta_k then
already holds every later segment's rewards, so A_high_k = delta_k (chaining GAE over the later
segments as well would count them twice).

Reconstruction choices: the subgoal tokens of a KEEP turn (a copy of the current subgoal) get
A_low (``keep_subgoal="low"``) so the consistency penalty reaches them, or 0 (``"zero"``); a
malformed turn without a parsed switch counts as KEEP with no keep/consistency penalty (it already
pays the invalid-action penalty). gamma = 1.0 (the reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from creditgym.credit.base import CreditModule, CreditOptions, check_choice, register, whiten
from creditgym.credit.ppo import CriticAdvantages, step_value
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, discounted_returns
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup

VALUE_SOURCES = ("critic", "group")
#: "per_turn" is an alias of "fixed".
KEEP_MODES = ("normalized", "fixed", "per_turn")
KEEP_SUBGOAL = ("low", "zero")
SPANS = ("switch", "subgoal", "action")
#: The critic's heads and where each reads: V_high and V_term at the state the turn acts in,
#: V_low after the subgoal it executes.
CRITIC_HEADS = {"high": "last_prompt_token", "low": "subgoal_end", "term": "last_prompt_token"}


@dataclass(frozen=True)
class HiPERConfig(CreditOptions):
    gamma: float = 1.0
    """Discount per turn (a segment of d turns discounts by gamma^d); 1.0 as the reference."""
    lam_turn: float = 1.0
    """GAE lambda of the low level, inside segments."""
    lam_seg: float = 0.95
    """GAE lambda of the high level, over segments."""
    keep_penalty: float = -0.3
    """p, added to KEEP turns (<= 0; 0 disables it): -0.3 (ALFWorld), -3.5 (WebShop)."""
    keep_mode: str = "normalized"
    """"normalized": p / T on each KEEP turn of a T > 1 turn trajectory (it pays p x keep
    ratio); "fixed" (alias "per_turn"): p on every KEEP turn."""
    consistency_penalty: float = -0.3
    """Added (<= 0) on a KEEP turn whose subgoal changed from the previous turn's; 0 disables."""
    bootstrap_truncated: bool = True
    """A truncated (not terminated) episode bootstraps from its own value estimates, not 0."""
    values: str = "critic"
    """"critic": V_high/V_low/V_term from the value heads; "group": group means of Monte-Carlo
    returns (critic-free, no extra model pass)."""
    group_bootstrap: str = "mean"
    """Critic-free only: what a segment bootstraps with at the next boundary: "mean" (the group
    mean, as every other V) or "return" (that trajectory's own Monte-Carlo return from there,
    so the low level still sees the episode's outcome when segments are short)."""
    keep_subgoal: str = "low"
    """Advantage of the subgoal tokens of KEEP turns: "low" (A_low) or "zero"."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        check_choice("values", self.values, VALUE_SOURCES)
        check_choice("keep_mode", self.keep_mode, KEEP_MODES)
        check_choice("keep_subgoal", self.keep_subgoal, KEEP_SUBGOAL)
        check_choice("group_bootstrap", self.group_bootstrap, ("mean", "return"))
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        for name in ("keep_penalty", "consistency_penalty"):
            if getattr(self, name) > 0:
                raise ValueError(
                    f"{name}={getattr(self, name)} is a bonus: penalties are added with their "
                    f"sign, as in the reference (e.g. {name}=-0.3)"
                )


MISSING_SWITCH = (
    "hiper needs Step.extras['switch'] ('KEEP' or 'SWITCH') on every valid turn; use an agent "
    "with the HiPER output format (LLM output_format='hiper', or HierTabularAgent)"
)


def parsed_field(step: Step, name: str) -> str | None:
    """``extras[name]`` (tabular agents) or ``extras["parsed"][name]`` (the LLM agent's parse)."""
    value = step.extras.get(name)
    if value is None:
        value = (step.extras.get("parsed") or {}).get(name)
    return value


def hiper_rewards(traj: Trajectory, config: HiPERConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Penalised rewards r_t, the segment-start mask, and the number of consistency violations.

    Turn 0 and SWITCH turns start segments. The keep penalty applies to every well-formed KEEP
    turn (turn 0 included), the consistency penalty to KEEP turns after turn 0 whose subgoal
    changed, both subgoals present; a malformed turn without a parsed switch is a KEEP without
    either penalty.
    """
    c = config
    steps = traj.steps
    n = len(steps)
    # "normalized": p x (K / T) / K = p / T on each of the K KEEP turns (nothing when T = 1).
    per = c.keep_penalty if c.keep_mode != "normalized" else (c.keep_penalty / n if n > 1 else 0)
    r, starts = [], []
    violations = 0
    prev_goal = None
    for t, s in enumerate(steps):
        x = s.penalized_reward(c.invalid_penalty)
        switch, goal = parsed_field(s, "switch"), parsed_field(s, "subgoal")
        if switch is None and s.valid and t > 0:
            raise ValueError(MISSING_SWITCH)
        is_switch = switch is not None and str(switch).upper() == "SWITCH"
        if switch is not None and not is_switch:  # a well-formed KEEP
            x += per
            if t > 0 and goal and prev_goal and goal != prev_goal:
                x += c.consistency_penalty
                violations += 1
        r.append(x)
        starts.append(t == 0 or is_switch)
        prev_goal = goal
    return np.asarray(r, dtype=np.float64), np.asarray(starts, dtype=bool), violations


def hierarchical_advantages(
    r: np.ndarray,
    starts: np.ndarray,
    v_high: np.ndarray,
    v_low: np.ndarray,
    v_term: np.ndarray,
    config: HiPERConfig,
    v_boot: np.ndarray | None = None,
    truncated: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One trajectory's raw A_high (NaN off boundaries), A_low, A_term and G (switch returns).

    A single backward pass; ``v_high`` is read only at segment starts. ``v_boot`` (default
    ``v_high``) is the value a segment ending before turn t bootstraps with at that boundary;
    when it is given (the trajectory's own return), the high level does not chain over later
    segments. ``truncated`` (with ``bootstrap_truncated``): after the last turn, bootstrap with
    V_low of the last turn (low level) and V_high of the last segment's start (high, switch).
    """
    c = config
    n = len(r)
    a_high = [float("nan")] * n
    a_low = [0.0] * n
    a_term = [0.0] * n
    g_ret = [0.0] * n
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)
    # Python floats and lists: this loop runs once per step of the batch.
    r, starts = np.asarray(r, np.float64).tolist(), np.asarray(starts, bool).tolist()
    v_high, v_low = np.asarray(v_high, np.float64).tolist(), np.asarray(v_low, np.float64).tolist()
    v_term = np.asarray(v_term, np.float64).tolist()
    chain = v_boot is None  # a Monte-Carlo bootstrap already holds the later segments
    v_boot = v_high if v_boot is None else np.asarray(v_boot, np.float64).tolist()
    gamma, lam_turn, lam_seg = c.gamma, c.lam_turn, c.lam_seg
    end_low = end_high = 0.0  # what the episode's last turn bootstraps with
    if truncated and c.bootstrap_truncated:
        last_start = max(t for t in range(n) if starts[t] or t == 0)
        end_low, end_high = v_low[n - 1], v_high[last_start]
    next_high_v = end_high  # V at the end of the segment being traversed
    next_high_a = 0.0  # A_high of the next segment
    seg_disc = 1.0  # gamma^{d_k} of the segment being traversed
    ret = low_adv = seg_ret = 0.0
    for t in range(n - 1, -1, -1):
        if t == n - 1 or starts[t + 1]:  # entering a segment from its end
            ret, low_adv, seg_ret, seg_disc = next_high_v, 0.0, 0.0, 1.0
            next_low_v = end_low if t == n - 1 else next_high_v
        else:
            next_low_v = v_low[t + 1]
        ret = r[t] + gamma * ret
        g_ret[t] = ret
        a_term[t] = ret - v_term[t]
        low_adv = r[t] + gamma * next_low_v - v_low[t] + gamma * lam_turn * low_adv
        a_low[t] = low_adv
        seg_ret = r[t] + gamma * seg_ret
        seg_disc *= gamma
        if starts[t] or t == 0:
            delta = seg_ret + seg_disc * next_high_v - v_high[t]
            next_high_a = delta + (seg_disc * lam_seg * next_high_a if chain else 0.0)
            a_high[t] = next_high_a
            next_high_v = v_boot[t]
    return np.array(a_high), np.array(a_low), np.array(a_term), np.array(g_ret)


class TrajectoryParts(NamedTuple):
    """One trajectory's HiPER quantities: rewards, segment starts, the V's it used, and its raw
    advantages and switch returns (A_high NaN off boundaries)."""

    rewards: np.ndarray
    starts: np.ndarray
    v_high: np.ndarray
    v_low: np.ndarray
    v_term: np.ndarray
    a_high: np.ndarray
    a_low: np.ndarray
    a_term: np.ndarray
    g: np.ndarray
    violations: int


def group_parts(group: TrajectoryGroup, config: HiPERConfig) -> list[TrajectoryParts]:
    """`TrajectoryParts` of every trajectory of the group (critic values or group means)."""
    c = config
    prepared = [hiper_rewards(t, c) for t in group.trajectories]
    if c.values == "group":
        mc = [discounted_returns(r, c.gamma) for r, _, _ in prepared]
        all_mc = np.concatenate(mc) if mc else np.zeros(0)
        bnd = np.concatenate([m[s] for m, (_, s, _) in zip(mc, prepared)]) if mc else np.zeros(0)
        mean_all = float(all_mc.mean()) if all_mc.size else 0.0
        mean_bnd = float(bnd.mean()) if bnd.size else 0.0
    out = []
    for ti, (traj, (r, starts, viol)) in enumerate(zip(group.trajectories, prepared)):
        n = len(traj)
        boot = None
        if c.values == "group":
            vh, vl, vt = np.full(n, mean_bnd), np.full(n, mean_all), np.full(n, mean_all)
            if c.group_bootstrap == "return":
                boot = mc[ti]
        else:
            vh, vl, vt = HiPER.critic_values(traj, starts)
        last = traj.steps[-1] if traj.steps else None
        truncated = last is not None and last.truncated and not last.terminated
        raw = hierarchical_advantages(r, starts, vh, vl, vt, c, v_boot=boot, truncated=truncated)
        out.append(TrajectoryParts(r, starts, vh, vl, vt, *raw, viol))
    return out


def _zscore_finite(x: np.ndarray) -> np.ndarray:
    """z-score of the finite entries over the batch (`whiten`); NaN entries become 0."""
    return whiten(x, np.isfinite(x))


@register("hiper")
class HiPER(CreditModule):
    """Hierarchical (segment / turn / switch) advantages routed to their output spans."""

    Config = HiPERConfig
    needs = frozenset({"values"})
    #: The per-span advantages it returns; a policy must emit these parts (switch, subgoal, action).
    span_names: ClassVar[tuple[str, ...]] = SPANS

    def validate(self) -> None:
        c = self.config
        # Critic-free HiPER needs nothing from the model (instance attributes).
        self.needs = frozenset({"values"}) if c.values == "critic" else frozenset()
        self.value_heads = dict(CRITIC_HEADS) if c.values == "critic" else {}

    @staticmethod
    def critic_values(traj: Trajectory, starts: np.ndarray) -> tuple[np.ndarray, ...]:
        """V_high (NaN off boundaries), V_low, V_term of one trajectory from `Step.values`."""
        try:
            rows = [
                (s.values["high"] if b else np.nan, s.values["low"], s.values["term"])
                for s, b in zip(traj.steps, starts)
            ]
        except (KeyError, TypeError):  # name the missing head in a clear error
            for s, b in zip(traj.steps, starts):
                for head in ("high", "low", "term") if b else ("low", "term"):
                    step_value(s, head, "hiper")
            raise
        return tuple(np.array(col, dtype=np.float64) for col in zip(*rows))

    def compute(self, groups: Sequence[TrajectoryGroup]) -> CriticAdvantages:
        c = self.config
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("high", "low", "term", "g")}
        targets: dict[str, list[np.ndarray]] = {k: [] for k in ("high", "low", "term")}
        starts_all: list[np.ndarray] = []
        violations = keep_turns = 0
        for g in groups:
            for p in group_parts(g, c):
                if len(p.rewards) == 0:
                    continue
                parts["high"].append(p.a_high)
                parts["low"].append(p.a_low)
                parts["term"].append(p.a_term)
                targets["high"].append(np.where(p.starts, p.a_high + p.v_high, np.nan))
                targets["low"].append(p.a_low + p.v_low)
                targets["term"].append(p.g)
                starts_all.append(p.starts)
                violations += p.violations
                keep_turns += int(len(p.starts) - p.starts.sum())
        raw = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
        # Batch-wide z-scores before any early return: in a data-parallel run every rank reduces.
        z_high, z_low, z_term = (_zscore_finite(raw[k]) for k in ("high", "low", "term"))
        if not starts_all:
            empty = np.zeros(0)
            return CriticAdvantages(values=empty, spans={k: empty for k in SPANS})
        starts = np.concatenate(starts_all)
        keep_sub = z_low if c.keep_subgoal == "low" else np.zeros_like(z_low)
        spans = {"switch": z_term, "subgoal": np.where(starts, z_high, keep_sub), "action": z_low}
        n_steps = len(starts)
        n_traj = len(starts_all)
        diagnostics = {
            "segments_per_traj": float(starts.sum()) / n_traj,
            "segment_len_mean": n_steps / max(float(starts.sum()), 1.0),
            "switch_rate": float(starts.mean()),
            "consistency_violation_frac": violations / max(keep_turns, 1),
            "a_high_raw_mean": float(np.nanmean(raw["high"])),
            "a_low_raw_mean": float(raw["low"].mean()),
            "a_term_raw_mean": float(raw["term"].mean()),
        }
        return CriticAdvantages(
            values=z_low,
            spans=spans,
            targets={k: np.concatenate(v) for k, v in targets.items()},
            diagnostics=diagnostics,
        )
