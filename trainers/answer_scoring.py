"""IGPO's answer scoring: how likely the policy finds the ground truth before and after each turn.

For every turn t of a trajectory with a ground truth (``info["ground_truth"]``), two teacher-forced
queries are scored under the current model:

    before_t = prompt_t                      + answer prefix + ground truth
    after_t  = prompt_{t+1} (or prompt_t + response_t for the last turn) + answer prefix + ground truth

and ``Step.answer_logprob_before/after`` get the mean log-prob of the ground-truth tokens (P =
exp of it, ALGORITHMS.md). The contexts are the exact token ids the agent recorded, so nothing is
re-tokenised; the prefix and the ground truth are tokenised once per trajectory.

All queries of a batch run together: packed into micro-batches under a token budget
(`creditgym.trainers.batching`), right-padded, and the language-model head is applied only at the
ground-truth positions (never a [batch, length, vocab] tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from creditgym.credit.trajectory import Step, TrajectoryGroup
from creditgym.trainers.batching import pad_right, token_batches

#: The reference's answer prefix for models that think first (Search-R1 / IGPO prompts).
DEFAULT_ANSWER_PREFIX = "</think>\n<answer>"


@dataclass
class _Query:
    step: Step
    when: str  # "before" | "after"
    ids: list[int]
    n_answer: int


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_queries(
    tokenizer: Any, groups: Sequence[TrajectoryGroup], answer_prefix: str
) -> list[_Query]:
    """Two queries per turn of every trajectory that has a ground truth and token records."""
    prefix = _encode(tokenizer, answer_prefix)
    queries: list[_Query] = []
    for group in groups:
        for traj in group.trajectories:
            truth = next(
                (s.info["ground_truth"] for s in traj.steps if s.info.get("ground_truth")), None
            )
            if truth is None:
                continue
            answer = _encode(tokenizer, str(truth))
            if not answer:
                continue
            for t, step in enumerate(traj.steps):
                if step.prompt_ids is None or step.response_ids is None:
                    raise ValueError(
                        "answer scoring needs the token records of every turn (Step.prompt_ids and "
                        "response_ids); this trajectory came from an agent without them"
                    )
                before = list(step.prompt_ids)
                nxt = traj.steps[t + 1].prompt_ids if t + 1 < len(traj.steps) else None
                after = list(nxt) if nxt is not None else before + list(step.response_ids)
                queries.append(_Query(step, "before", before + prefix + answer, len(answer)))
                queries.append(_Query(step, "after", after + prefix + answer, len(answer)))
    return queries


@torch.no_grad()
def answer_token_logprobs(
    model: Any, batch: Sequence[Sequence[int]], n_answer: Sequence[int]
) -> list[torch.Tensor]:
    """Log-probs of the last ``n_answer[b]`` tokens of every sequence ``batch[b]`` (one forward)."""
    ids, mask = pad_right(batch, getattr(model.config, "pad_token_id", None) or 0)
    rows, cols = [], []
    for b, seq in enumerate(batch):
        for p in range(len(seq) - n_answer[b], len(seq)):
            rows.append(b)
            cols.append(p - 1)  # the token at p is predicted at position p - 1
    hidden = model.get_decoder()(
        input_ids=ids, attention_mask=mask, use_cache=False
    ).last_hidden_state
    rows_t, cols_t = torch.as_tensor(rows), torch.as_tensor(cols)
    logits = model.get_output_embeddings()(hidden[rows_t, cols_t]).float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[rows_t, cols_t + 1].unsqueeze(-1))
    logp = logp.squeeze(-1)
    out, pos = [], 0
    for n in n_answer:
        out.append(logp[pos : pos + n])
        pos += n
    return out


def score_answers(
    model: Any,
    tokenizer: Any,
    groups: Sequence[TrajectoryGroup],
    answer_prefix: str = DEFAULT_ANSWER_PREFIX,
    max_batch_tokens: int = 8192,
) -> dict[str, float]:
    """Fill ``answer_logprob_before/after`` on every turn that has a ground truth.

    Returns ``{"igpo/scored_turns", "igpo/queries", "igpo/batches"}``. Trajectories without a
    ground truth are left untouched (IGPO then reports them clearly).
    """
    queries = build_queries(tokenizer, groups, answer_prefix)
    batches = token_batches(queries, max_batch_tokens, length=lambda q: len(q.ids))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            logps = answer_token_logprobs(
                model, [q.ids for q in batch], [q.n_answer for q in batch]
            )
            for q, lp in zip(batch, logps):
                setattr(q.step, f"answer_logprob_{q.when}", float(lp.mean()))
    finally:
        model.train(was_training)
    return {
        "igpo/scored_turns": len(queries) / 2,
        "igpo/queries": float(len(queries)),
        "igpo/batches": float(len(batches)),
    }
