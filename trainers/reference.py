"""Reference advantages for the credit benchmark, and how a method's advantages are scored.

`mc_reference` estimates A^pi(s, a) = Q^pi(s, a) - V^pi(s) of the acting policy by Monte Carlo,
for any env that can branch (`creditgym.trainers.branching`): no finite model needed.

- Units are (group, state) pairs of a recorded batch. ``n_states`` of them are drawn without
  replacement with probability proportional to their visit count (the state of a random step).
- V^pi(s): the mean discounted return of ``k`` continuations branched at a recorded step in s
  (the policy picks its own action at s).
- Q^pi(s, a) for each distinct action a taken at s in that group (at most ``max_actions``, the
  most frequent): r + gamma * mean return of ``k`` continuations branched after a recorded step
  that took a at s (the envs are deterministic, so the next state is that step's); Q = r when
  the step ended the episode.
- Standard errors: sample std / sqrt(k) for each mean; A's is sqrt(se_Q^2 + se_V^2).
- Split halves: every estimate is also made from the first and the second half of its k
  continuations, for the reliability below.

Every step at a sampled unit gets the reference A(s, a) (NaN elsewhere), so the scores pool over
steps like the exact reference's.

Scores (`fidelity_scores`):

- Pearson r of the method's step advantages with the reference's, pooled over the steps that
  have one ("raw");
- corrected for the reference's own noise by attenuation: the split-half correlation r_hh of the
  two half-sample references over the same steps, stepped up to the full k by Spearman-Brown,
  rel = 2 r_hh / (1 + r_hh), and r_corrected = r_raw / sqrt(rel) (None when rel <= 0). The MC
  noise is independent of the method's advantages (fresh continuations), so only the reference
  side is corrected; with the exact reference rel = 1 and both coincide;
- pairwise order accuracy (`pairwise_order`): pairs of steps in one group at the same state with
  different actions; the method's order of each pair against the reference's; reference ties
  skipped, method ties count one half.

Every score is taken over the steps the method trains on (`trained_steps`: ``Advantages.mask``
True and ``Advantages.weight`` not 0). A masked step's advantage is no claim about that step
(SPO-tree sets it to 0 for unselected edges, R^3L for a retry's shared prefix), so counting it
would score the mask, not the credit. Methods that mask nothing score as before.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from creditgym.credit.trajectory import Trajectory, TrajectoryGroup

__all__ = [
    "MCReference",
    "fidelity_scores",
    "mc_reference",
    "pairwise_order",
    "pearson",
    "trained_steps",
]


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson r over the entries where both are finite; None with < 3 or a constant side."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.std(x) < 1e-12 or np.std(y) < 1e-12:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def trained_steps(advantages: Any) -> np.ndarray:
    """Bool per step: True where the method trains on it (``mask`` True and ``weight`` != 0)."""
    return advantages.step_mask() & (advantages.step_weight() != 0.0)


def _restrict(reference: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """`reference` as floats with NaN wherever `mask` is False (a copy; `mask` None: unchanged)."""
    reference = np.array(reference, dtype=np.float64)
    if mask is None:
        return reference
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != reference.shape:
        raise ValueError(f"mask has shape {mask.shape}, the reference {reference.shape}")
    reference[~mask] = np.nan
    return reference


def _tol(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return 1e-9 * max(1.0, float(np.abs(finite).max()) if len(finite) else 1.0)


def pairwise_order(
    groups: Sequence[TrajectoryGroup],
    method: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray | None = None,
) -> tuple[float | None, int]:
    """Within-state pairwise order accuracy and the number of pairs scored.

    Pairs: two steps of one group at the same ``state_key`` with different actions, both with a
    finite reference and both True in ``mask`` (None: every step). A pair the reference ties is
    skipped; otherwise it scores 1 when the method orders it the same way, 1/2 when the method
    ties it, 0 otherwise. Pooled over the batch.
    """
    method, reference = np.asarray(method, dtype=np.float64), _restrict(reference, mask)
    tol_m, tol_r = _tol(method), _tol(reference)
    score, pairs, pos = 0.0, 0, 0
    for g in groups:
        by_state: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for traj in g.trajectories:
            for step in traj.steps:
                if np.isfinite(reference[pos]):
                    by_state[step.state_key].append((pos, step.action))
                pos += 1
        for items in by_state.values():
            if len({a for _, a in items}) < 2:
                continue
            idx = np.array([i for i, _ in items])
            codes = np.unique([a for _, a in items], return_inverse=True)[1]
            upper = np.triu(codes[:, None] != codes[None, :], k=1)
            dr = (reference[idx][:, None] - reference[idx][None, :])[upper]
            dm = (method[idx][:, None] - method[idx][None, :])[upper]
            keep = np.abs(dr) > tol_r
            dr, dm = dr[keep], dm[keep]
            tie = np.abs(dm) <= tol_m
            score += float(np.sum(~tie & (np.sign(dm) == np.sign(dr))) + 0.5 * np.sum(tie))
            pairs += int(len(dr))
    return (score / pairs if pairs else None), pairs


def fidelity_scores(
    groups: Sequence[TrajectoryGroup],
    method: np.ndarray,
    reference: np.ndarray,
    halves: tuple[np.ndarray, np.ndarray] | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """Pearson raw, Pearson corrected for the reference's noise (split-half attenuation; equal
    to raw without halves), the split-half reliability, pairwise order accuracy and its pairs,
    and the number of steps scored. Only steps True in ``mask`` count (None: every step; pass
    `trained_steps(advantages)`), for the reliability too."""
    reference = _restrict(reference, mask)
    raw = pearson(method, reference)
    out: dict[str, Any] = {"pearson": raw, "pearson_corrected": raw, "reliability": 1.0}
    if halves is not None:
        r_hh = pearson(*(_restrict(h, mask) for h in halves))
        rel = None if r_hh is None else 2 * r_hh / (1 + r_hh)
        out["reliability"] = rel
        ok = raw is not None and rel is not None and rel > 0
        out["pearson_corrected"] = raw / np.sqrt(rel) if ok else None
    out["pairwise"], out["pairs"] = pairwise_order(groups, method, reference)
    out["steps"] = int(np.isfinite(reference).sum())
    return out


@dataclass
class MCReference:
    """Per-step MC advantages of one batch (NaN off the sampled units) and their diagnostics."""

    values: np.ndarray
    se: np.ndarray
    halves: tuple[np.ndarray, np.ndarray]
    #: One row per estimated (group, state, action): Q, its se, V, its se.
    units: list[dict[str, Any]] = field(default_factory=list)
    #: Branching counters: restores, diverged, env_errors, generated (policy turns spent).
    stats: dict[str, float] = field(default_factory=dict)


def _returns(trajs: Sequence[Trajectory], start: int, gamma: float) -> np.ndarray:
    """Discounted return of each continuation from its branch step `start` on."""
    out = []
    for traj in trajs:
        rewards = [s.reward for s in traj.steps[start:]]
        out.append(sum(r * gamma**u for u, r in enumerate(rewards)))
    return np.array(out, dtype=np.float64)


def _mean_se_halves(x: np.ndarray) -> tuple[float, float, float, float]:
    if len(x) == 0:
        return (np.nan,) * 4
    half = len(x) // 2
    se = float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else np.nan
    h1 = float(x[:half].mean()) if half else np.nan
    h2 = float(x[half:].mean())
    return float(x.mean()), se, h1, h2


def mc_reference(
    pool: Any,
    agent: Any,
    groups: Sequence[TrajectoryGroup],
    *,
    k: int = 8,
    n_states: int = 16,
    max_actions: int = 4,
    gamma: float = 0.95,
    rng: np.random.Generator,
    chunk: int = 256,
) -> MCReference:
    """MC estimates of A^pi at `n_states` sampled (group, state) units of `groups` (module
    docstring). The agent acts with its current policy; pass an agent whose random state the
    caller has set aside, so that the training rollouts do not depend on the reference."""
    from creditgym.trainers.branching import BranchRequest, branch_many

    if k < 2:
        raise ValueError(f"the MC reference needs k >= 2 continuations (split halves), got {k}")
    flat: list[tuple[int, Trajectory, int]] = []  # (group, trajectory, step) per flat step
    for gi, g in enumerate(groups):
        for traj in g.trajectories:
            flat.extend((gi, traj, t) for t in range(len(traj.steps)))
    n = len(flat)
    values = np.full(n, np.nan)
    se = np.full(n, np.nan)
    h1, h2 = np.full(n, np.nan), np.full(n, np.nan)
    visits: Counter = Counter((gi, traj.steps[t].state_key) for gi, traj, t in flat)
    if not visits:
        return MCReference(values, se, (h1, h2))
    keys = list(visits)
    p = np.array([visits[u] for u in keys], dtype=np.float64)
    picked = rng.choice(len(keys), size=min(n_states, len(keys)), replace=False, p=p / p.sum())
    units = {keys[i] for i in picked}
    # representatives: first recorded step per unit (V) and per (unit, action) (Q)
    first_state: dict[tuple[int, str], tuple[Trajectory, int]] = {}
    first_action: dict[tuple[int, str], dict[str, tuple[Trajectory, int]]] = defaultdict(dict)
    counts: dict[tuple[int, str], Counter] = defaultdict(Counter)
    for gi, traj, t in flat:
        unit = (gi, traj.steps[t].state_key)
        if unit not in units:
            continue
        first_state.setdefault(unit, (traj, t))
        first_action[unit].setdefault(traj.steps[t].action, (traj, t))
        counts[unit][traj.steps[t].action] += 1
    requests: list[BranchRequest] = []
    terminal_q: dict[tuple[int, str, str], float] = {}
    for unit in sorted(units):
        traj, t = first_state[unit]
        requests.append(BranchRequest(traj, t, k, tag=("V", unit, None)))
        for action, _c in counts[unit].most_common(max_actions):
            traj_a, t_a = first_action[unit][action]
            if t_a + 1 < len(traj_a.steps):
                requests.append(BranchRequest(traj_a, t_a + 1, k, tag=("Q", unit, action)))
            else:  # the step ended the episode (won, or truncated at the step limit)
                terminal_q[(*unit, action)] = float(traj_a.steps[t_a].reward)
    stats: dict[str, float] = defaultdict(float)
    est: dict[tuple, tuple[float, float, float, float]] = {}
    per_call = max(1, chunk // k)
    for c in range(0, len(requests), per_call):
        batch = branch_many(pool, agent, requests[c : c + per_call])
        for key in ("restores", "diverged", "env_errors", "generated"):
            stats[key] += batch.stats.get(key, 0.0)
        for res in batch.results:
            kind, unit, action = res.request.tag
            g = _returns(res.continuations, res.request.t, gamma)
            if kind == "Q":
                r = float(res.request.traj.steps[res.request.t - 1].reward)
                m, s, a, b = _mean_se_halves(g)
                est[(kind, unit, action)] = (r + gamma * m, gamma * s, r + gamma * a, r + gamma * b)
            else:
                est[(kind, unit, action)] = _mean_se_halves(g)
    for key, q in terminal_q.items():
        est[("Q", (key[0], key[1]), key[2])] = (q, 0.0, q, q)
    rows = []
    for unit in sorted(units):
        v = est.get(("V", unit, None))
        for action in counts[unit]:
            q = est.get(("Q", unit, action))
            if v is None or q is None:
                continue
            rows.append(
                {"group": unit[0], "state_key": unit[1], "action": action, "visits": counts[unit][action],
                 "Q": q[0], "Q_se": q[1], "V": v[0], "V_se": v[1]}
            )  # fmt: skip
    table = {(r["group"], r["state_key"], r["action"]): r for r in rows}
    for pos, (gi, traj, t) in enumerate(flat):
        step = traj.steps[t]
        unit = (gi, step.state_key)
        if unit not in units or (*unit, step.action) not in table:
            continue
        q = est[("Q", unit, step.action)]
        v = est[("V", unit, None)]
        values[pos] = q[0] - v[0]
        se[pos] = float(np.hypot(q[1], v[1]))
        h1[pos], h2[pos] = q[2] - v[2], q[3] - v[3]
    return MCReference(values, se, (h1, h2), rows, dict(stats))
