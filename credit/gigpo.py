"""GiGPO: Group-in-Group Policy Optimization (Feng et al. 2025, arXiv 2505.10978).

Two levels of group-relative advantage inside each group of G trajectories of one task:

    A^E_i     = norm_{j in group}(R_j)                         episode level (as GRPO)
    A^S_{i,t} = norm_{(j,u) in anchor(s_{i,t})}(Rhat_{j,u})     step level
    A_{i,t}   = A^E_i + omega * A^S_{i,t}

where Rhat_{i,t} = r_{i,t} + gamma * Rhat_{i,t+1} (gamma = 0.95, `returns.batch_discounted_returns`)
and the anchor group of a step is every step of every trajectory in the group taken in the same
state (revisits inside one trajectory count each time): the step's node in the group's
`TrajectoryGraph` (states equal when their `state_key`s are equal).

``similarity`` is the documented alternative keying, for envs whose observation text is the only
state there is: observation texts (not graph nodes) are clustered greedily as verl-agent does, each
text joining the first cluster whose representative ``rep`` (its first member) gives
``difflib.SequenceMatcher(None, text, rep).ratio() >= similarity`` (that argument order and
difflib's default autojunk, as the reference; 0.9 is used for search). `similarity_clusters` gives
exactly those clusters, faster: one matcher per representative keeps difflib's cached analysis of
``rep``, the cheap upper bounds ``real_quick_ratio`` and ``quick_ratio`` skip hopeless pairs, and
repeated texts reuse their label.

Defaults follow the paper: ``mean_std_norm`` ("w/ std"), omega = 1, gamma = 0.95; the std is the
sample std (ddof = 1), as ``torch.std`` in verl-agent; ``std="population"`` is an option. Two
options reproduce verl-agent's ``compute_gigpo_outcome_advantage`` (not defaults):
``per_step_rows=True`` takes the episode term's mean and std over all step rows of the group
(its ``compute_mean_std_cross_steps``), and ``episode_score="verl_agent"`` scores each step row as
10 x won minus that row's own invalid penalty (its token score) where the default scores a
trajectory by its return R_i. One difference remains: a group with a single step row gets 0 here,
where verl-agent divides that row's score by 1 + 1e-6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

import numpy as np

from creditgym.credit.base import (
    TIE_RTOL,
    Advantages,
    CreditModule,
    NormOptions,
    check_choice,
    group_normalize,
    register,
)
from creditgym.credit.graph import batch_ids
from creditgym.credit.grpo import episode_advantages
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY, batch_discounted_returns
from creditgym.credit.trajectory import TrajectoryGroup

EPISODE_SCORES = ("return", "verl_agent")
#: verl-agent's episode score of a won episode (ALFWorld's and WebShop's 10 x won).
VERL_AGENT_WIN_SCORE = 10.0


@dataclass(frozen=True)
class GiGPOConfig(NormOptions):
    gamma: float = 0.95
    """Discount of the step returns Rhat used inside anchor groups."""
    omega: float = 1.0
    """Weight of the step-level advantage."""
    similarity: float | None = None
    """None: anchor states are the graph's nodes (exact `state_key`). A float in (0, 1]: cluster
    observation texts whose difflib ratio to the cluster's representative is >= this value."""
    per_step_rows: bool = False
    """Episode term over all step rows of the group (verl-agent) instead of its trajectories."""
    episode_score: str = "return"
    """Episode score: "return" (R_i, the paper) or "verl_agent" (per step row, 10 x won minus
    that row's invalid penalty)."""
    invalid_penalty: float = DEFAULT_INVALID_PENALTY
    """Subtracted from a step's reward when its action was invalid."""

    def check(self) -> None:
        super().check()
        check_choice("episode_score", self.episode_score, EPISODE_SCORES)
        if self.similarity is not None and not 0.0 < self.similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1] or None, got {self.similarity}")


def reference_similarity_clusters(texts: Sequence[str], threshold: float) -> list[int]:
    """verl-agent's plain loop, the specification `similarity_clusters` is checked against: each
    text joins the first cluster whose representative ``rep`` gives
    ``SequenceMatcher(None, text, rep).ratio() >= threshold``, else starts a new one."""
    reps: list[str] = []
    labels: list[int] = []
    for text in texts:
        for ci, rep in enumerate(reps):
            if SequenceMatcher(None, text, rep).ratio() >= threshold:
                labels.append(ci)
                break
        else:
            labels.append(len(reps))
            reps.append(text)
    return labels


def similarity_clusters(texts: Sequence[str], threshold: float) -> np.ndarray:
    """verl-agent's greedy clustering: each text joins the first cluster whose representative
    ``rep`` has ``SequenceMatcher(None, text, rep).ratio() >= threshold``; labels 0..n-1."""
    matchers: list[SequenceMatcher] = []
    seen: dict[str, int] = {}
    labels = []
    for text in texts:
        label = seen.get(text)
        if label is None:
            label = -1
            for ci, m in enumerate(matchers):
                m.set_seq1(text)  # the representative stays seq2: difflib keeps its analysis
                # real_quick_ratio >= quick_ratio >= ratio: the cheap bounds skip hopeless pairs.
                if (
                    m.real_quick_ratio() >= threshold
                    and m.quick_ratio() >= threshold
                    and m.ratio() >= threshold
                ):
                    label = ci
                    break
            if label < 0:
                label = len(matchers)
                matchers.append(SequenceMatcher(None, b=text))
            seen[text] = label
        labels.append(label)
    return np.asarray(labels, dtype=np.int64)


def episode_term(groups: Sequence[TrajectoryGroup], config: GiGPOConfig) -> np.ndarray:
    """A^E of every step row (flat order).

    "return": GRPO's `episode_advantages` (over trajectories, or ``per_step_rows``). "verl_agent":
    each row's score 10 x won - its own penalty, normalised with the mean and std of all the
    group's rows (``per_step_rows``) or of one row per trajectory (its first), as verl-agent's
    ``episode_norm_reward`` does with ``compute_mean_std_cross_steps`` on or off.
    """
    c = config
    if c.episode_score == "return":
        return episode_advantages(groups, c.mode, c.std, c.invalid_penalty, c.per_step_rows)
    rows, first, gids = [], [], []
    for gi, g in enumerate(groups):
        for traj in g.trajectories:
            won = VERL_AGENT_WIN_SCORE * float(traj.won)
            # The row's own penalty is what `Step.penalized_reward` takes off its reward.
            rows.extend(won + s.penalized_reward(c.invalid_penalty) - s.reward for s in traj.steps)
            first.extend([True] + [False] * (len(traj) - 1))
            gids.extend([gi] * len(traj))
    x = np.asarray(rows, dtype=np.float64)
    ids = np.asarray(gids, dtype=np.int64)
    if x.size == 0 or c.per_step_rows:
        return group_normalize(x, ids, c.mode, c.std)
    sel = np.asarray(first, dtype=bool)
    xs, gs = x[sel], ids[sel]
    n_groups = int(ids.max()) + 1
    counts = np.bincount(gs, minlength=n_groups).astype(np.float64)
    means = np.bincount(gs, weights=xs, minlength=n_groups) / np.maximum(counts, 1)
    out = x - means[ids]
    if c.mode == "mean_std_norm":
        ddof = 0 if c.std == "population" else 1
        sq = np.bincount(gs, weights=(xs - means[gs]) ** 2, minlength=n_groups)
        sd = np.sqrt(sq / np.maximum(counts - ddof, 1))
        out = out / (sd[ids] + 1e-6)
        out[(sd <= TIE_RTOL * (np.abs(means) + 1.0))[ids]] = 0.0
    out[counts[ids] <= 1] = 0.0
    return out


@register("gigpo")
class GiGPO(CreditModule):
    """Episode-level plus anchor-state step-level group-relative advantages."""

    Config = GiGPOConfig

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        episode = episode_term(groups, c)
        step_returns = batch_discounted_returns(groups, c.gamma, c.invalid_penalty)
        if c.similarity is None:
            per_group = [g.graph().node for g in groups]
        else:
            per_group = [
                similarity_clusters(
                    [s.observation for t in g.trajectories for s in t.steps], c.similarity
                )
                for g in groups
            ]
        anchor_ids = batch_ids(per_group)
        step_adv = group_normalize(step_returns, anchor_ids, c.mode, c.std)
        sizes = np.bincount(anchor_ids) if len(anchor_ids) else np.zeros(0)
        sizes = sizes[sizes > 0]
        diagnostics = {
            "anchor_groups": float(len(sizes)),
            "anchor_group_size_mean": float(sizes.mean()) if len(sizes) else 0.0,
            "anchor_group_size_max": float(sizes.max()) if len(sizes) else 0.0,
            "anchor_nonsingleton_step_frac": float(np.mean(np.bincount(anchor_ids)[anchor_ids] > 1))
            if len(anchor_ids)
            else 0.0,
            "step_adv_std": float(step_adv.std()) if len(step_adv) else 0.0,
        }
        return Advantages(values=episode + c.omega * step_adv, diagnostics=diagnostics)
