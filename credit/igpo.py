"""IGPO: Information-Gain-based Policy Optimization (arXiv 2510.14967).

For tasks with a ground-truth answer (search, tool use). Before and after each turn t, the learner
scores the ground truth by teacher forcing under the current policy: the context so far, a fixed
answer prefix (e.g. ``"</think>\\n<answer>"``) and the ground-truth tokens; the mean log-prob of
those tokens is ``Step.answer_logprob_before`` / ``answer_logprob_after`` (filled by
`creditgym.trainers.answer_scoring`), and P = exp(mean log-prob). Turn rewards:

    r_t = P_after,t - P_before,t          (variant "prob_diff", the paper)
    r_t = logP_after,t - logP_before,t    (variant "log_prob_diff")        for t < T - 1
    r_{T-1} = F1(answer, ground truth)    word-level F1; ``format_penalty`` (-2.0) if the last
                                          turn holds no well-formed <answer>...</answer>

The rewards are normalised inside each group: ``joint`` z-scores every turn reward of the group
together (the paper); ``separate`` z-scores the F1 rewards and the information-gain rewards each
among themselves (``mode="mean_norm"`` centres without dividing by the std). Then A_t = r~_t + gamma A_{t+1} with gamma = 1.0.

The final F1 is taken against the best-matching of the task's golden answers: the env's
``info["golden_answers"]`` (a list), else ``info["ground_truth"]`` alone.

Reconstruction choices: the answers come from the trajectory's last step that has them; the answer is the text inside the last turn's ``<answer>`` tag (from
the action, else the raw text); a last turn marked invalid, or without an answer tag (e.g. a
truncated episode that was still searching), gets the format penalty. F1 follows SQuAD's
normalisation (lower case, no punctuation or articles, whitespace tokens).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.credit.base import (
    Advantages,
    CreditModule,
    NormOptions,
    check_choice,
    normalize,
    register,
)
from creditgym.credit.returns import discounted_returns
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup

VARIANTS = ("prob_diff", "log_prob_diff")
NORMALISATIONS = ("joint", "separate")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> list[str]:
    """SQuAD-style answer tokens: lower case, punctuation and articles removed."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def word_f1(prediction: str, truth: str) -> float:
    """Word-level F1 between two answers (harmonic mean of token precision and recall)."""
    pred, gold = normalize_answer(prediction), normalize_answer(truth)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def extract_answer(step: Step) -> str | None:
    """The answer inside the step's ``<answer>`` tag, or None when there is none."""
    for text in (step.action, step.text):
        found = _ANSWER.findall(text or "")
        if len(found) == 1 and found[0].strip():
            return found[0].strip()
    return None


def golden_answers(traj: Trajectory) -> list[str]:
    """The task's golden answers: ``info["golden_answers"]`` of the last step that has them, else
    ``[info["ground_truth"]]``."""
    for step in reversed(traj.steps):
        answers = step.info.get("golden_answers")
        if answers:
            return [str(a) for a in answers]
        gt = step.info.get("ground_truth")
        if gt:
            return [str(gt)]
    raise ValueError(
        "igpo needs info['golden_answers'] or info['ground_truth'] on the trajectory's steps; "
        "this env provides neither (IGPO is for tasks with a ground-truth answer: Search-v0, "
        "ToolUse-v0)"
    )


def best_f1(prediction: str, answers: Sequence[str]) -> float:
    """Word F1 against the best-matching answer."""
    return max(word_f1(prediction, a) for a in answers)


@dataclass(frozen=True)
class IGPOConfig(NormOptions):
    variant: str = "prob_diff"
    """Information gain: "prob_diff" (P_after - P_before) or "log_prob_diff" (log-prob difference)."""
    normalization: str = "joint"
    """"joint": z-score all turn rewards of a group together; "separate": F1 and IG apart."""
    gamma: float = 1.0
    """Discount of the normalised turn rewards when accumulating advantages."""
    format_penalty: float = -2.0
    """Final-turn reward when it holds no well-formed answer (the reference's -2.0)."""
    std: str = "population"
    """Which std the z-scores divide by: "population" (ddof=0) or "sample" (ddof=1)."""

    def check(self) -> None:
        super().check()  # mode: "mean_std_norm" (the paper's z-score) or "mean_norm"
        check_choice("variant", self.variant, VARIANTS)
        check_choice("normalization", self.normalization, NORMALISATIONS)


def turn_rewards(traj: Trajectory, config: IGPOConfig) -> tuple[np.ndarray, np.ndarray]:
    """Raw turn rewards of one trajectory and a mask of its information-gain turns."""
    n = len(traj)
    rewards = np.zeros(n)
    is_ig = np.zeros(n, dtype=bool)
    if n == 0:
        return rewards, is_ig
    for t, step in enumerate(traj.steps[:-1]):
        before, after = step.answer_logprob_before, step.answer_logprob_after
        if before is None or after is None:
            raise ValueError(
                f"igpo needs Step.answer_logprob_before/after on every turn but the last; turn "
                f"{t} has ({before}, {after}) (the trainer fills them: needs={{'answer_logprobs'}})"
            )
        if config.variant == "prob_diff":
            rewards[t] = math.exp(after) - math.exp(before)
        else:
            rewards[t] = after - before
        is_ig[t] = True
    last = traj.steps[-1]
    answer = extract_answer(last)
    if answer is None or not last.valid:
        rewards[-1] = config.format_penalty
    else:
        rewards[-1] = best_f1(answer, golden_answers(traj))
    return rewards, is_ig


@register("igpo")
class IGPO(CreditModule):
    """Turn-level information-gain rewards, group-normalised and summed to go."""

    Config = IGPOConfig
    needs = frozenset({"answer_logprobs"})

    def compute(self, groups: Sequence[TrajectoryGroup]) -> Advantages:
        c = self.config
        out: list[np.ndarray] = []
        ig_all, final_all = [], []
        for g in groups:
            raw = [turn_rewards(t, c) for t in g.trajectories]
            if not raw:
                continue
            r = np.concatenate([x for x, _ in raw])
            ig = np.concatenate([m for _, m in raw])
            ig_all.append(r[ig])
            final_all.append(r[~ig])
            if c.normalization == "joint":
                z = normalize(r, c.mode, c.std)
            else:
                z = np.zeros_like(r)
                z[ig] = normalize(r[ig], c.mode, c.std)
                z[~ig] = normalize(r[~ig], c.mode, c.std)
            pos = 0
            for traj in g.trajectories:
                out.append(discounted_returns(z[pos : pos + len(traj)], c.gamma))
                pos += len(traj)
        values = np.concatenate(out) if out else np.zeros(0)
        ig_r = np.concatenate(ig_all) if ig_all else np.zeros(0)
        fin = np.concatenate(final_all) if final_all else np.zeros(0)
        diagnostics = {
            "ig_reward_mean": float(ig_r.mean()) if ig_r.size else 0.0,
            "ig_reward_pos_frac": float(np.mean(ig_r > 0)) if ig_r.size else 0.0,
            "final_reward_mean": float(fin.mean()) if fin.size else 0.0,
            "malformed_final_frac": float(np.mean(fin == c.format_penalty)) if fin.size else 0.0,
        }
        return Advantages(values=values, diagnostics=diagnostics)
