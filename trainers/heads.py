"""Value heads on the policy backbone: V for PPO; V_high, V_low and V_term for HiPER.

A head is a linear map from the backbone's last hidden state at one token of a step to a scalar.
Heads live outside the policy (a separate `torch.nn.Module`), so under LoRA the adapter and the
heads train together while the frozen base weights stay untouched, and the heads save and load
on their own. Where each head reads (`read_offset`):

- ``v`` (PPO), ``high`` and ``term`` (HiPER): the last prompt token, i.e. the state the turn acts
  in (V_high is only used at segment boundaries, V_term on every turn);
- ``low`` (HiPER): the last token of the ``<subgoal>`` span of the response ("after
  ``</subgoal>``"), so V_low sees the subgoal it executes; without spans it falls back to the
  prompt end.

`fill_values` fills ``Step.values`` before a credit module that ``needs={"values"}`` runs;
`value_loss_on_batch` regresses the heads on the module's value targets
(``CriticAdvantages.targets``; NaN entries, such as V_high off boundaries, are skipped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from creditgym.credit.base import CreditModule
from creditgym.credit.trajectory import Step, TrajectoryGroup, flat_steps

#: Head names each critic-based credit module reads from `Step.values`.
HIPER_HEADS = ("high", "low", "term")


def heads_for(module: CreditModule) -> tuple[str, ...]:
    """The value heads a credit module reads (none when it does not need values)."""
    if "values" not in module.needs:
        return ()
    if module.name == "empg":
        return heads_for(module.base)
    if module.name == "hiper":
        return HIPER_HEADS
    return (getattr(module.config, "head", "v"),)


def read_offset(step: Step, head: str) -> int:
    """Offset into the step's response of the token whose hidden state `head` reads (-1: the
    last prompt token)."""
    if head == "low" and step.spans and step.spans.get("subgoal"):
        return int(step.spans["subgoal"][-1][1]) - 1
    return -1


class ValueHeads(torch.nn.Module):
    """One linear head per name on hidden states of size ``hidden_size`` (float32)."""

    def __init__(self, hidden_size: int, names: Sequence[str], seed: int = 0):
        super().__init__()
        if not names:
            raise ValueError("ValueHeads needs at least one head name")
        gen = torch.Generator().manual_seed(seed)
        self.heads = torch.nn.ModuleDict()
        for name in names:
            head = torch.nn.Linear(hidden_size, 1)
            with torch.no_grad():
                head.weight.normal_(0.0, 1.0 / math.sqrt(hidden_size), generator=gen)
                head.bias.zero_()
            self.heads[name] = head

    @property
    def names(self) -> list[str]:
        return list(self.heads.keys())

    def forward(self, hidden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{name: [n, hidden_size]}`` -> ``{name: [n]}``."""
        return {n: self.heads[n](h.float()).squeeze(-1) for n, h in hidden.items()}


def _sequences(steps: Sequence[Step]) -> list[list[int]]:
    out = []
    for step in steps:
        if step.prompt_ids is None or step.response_ids is None:
            raise ValueError(
                "value heads need the token records of every step (Step.prompt_ids and "
                "response_ids); tabular agents have none: use hiper's values='group' instead"
            )
        out.append(list(step.prompt_ids) + list(step.response_ids))
    return out


def _micro_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = max([lengths[i]] + [lengths[j] for j in current])
        if current and width * (len(current) + 1) > max_batch_tokens:
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


def gather_hidden(
    model: Any, steps: Sequence[Step], names: Sequence[str], max_batch_tokens: int = 8192
) -> dict[str, torch.Tensor]:
    """Backbone hidden states ``{head: [len(steps), hidden]}`` at each head's read position.

    Runs with gradients when the caller's context allows them (training the heads and LoRA).
    """
    seqs = _sequences(steps)
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in names}
    pad = getattr(model.config, "pad_token_id", None) or 0
    for batch in _micro_batches([len(s) for s in seqs], max_batch_tokens):
        width = max(len(seqs[i]) for i in batch)
        ids = torch.full((len(batch), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, i in enumerate(batch):
            ids[b, : len(seqs[i])] = torch.as_tensor(seqs[i])
            mask[b, : len(seqs[i])] = 1
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
        hidden = hidden.last_hidden_state
        for n in names:
            cols = [len(steps[i].prompt_ids) + read_offset(steps[i], n) for i in batch]
            rows = torch.arange(len(batch))
            parts[n].append((torch.as_tensor(batch), hidden[rows, torch.as_tensor(cols)]))
    out = {}
    for n in names:
        index = torch.cat([i for i, _ in parts[n]])  # the step of every gathered row
        rows = torch.cat([h for _, h in parts[n]]).float()
        out[n] = rows[torch.argsort(index)]  # back into step order (differentiable)
    return out


@torch.no_grad()
def fill_values(
    model: Any, heads: ValueHeads, groups: Sequence[TrajectoryGroup], max_batch_tokens: int = 8192
) -> dict[str, float]:
    """Set ``Step.values = {head: V}`` on every step of the batch (one no-grad pass)."""
    steps = flat_steps(groups)
    if not steps:
        return {}
    was_training = model.training
    model.eval()
    try:
        preds = heads(gather_hidden(model, steps, heads.names, max_batch_tokens))
    finally:
        model.train(was_training)
    arrays = {n: p.numpy().astype(np.float64) for n, p in preds.items()}
    for k, step in enumerate(steps):
        step.values = {n: float(a[k]) for n, a in arrays.items()}
    return {f"values/{n}_mean": float(a.mean()) for n, a in arrays.items()}


def value_loss(
    predictions: dict[str, torch.Tensor], targets: dict[str, np.ndarray | torch.Tensor]
) -> torch.Tensor:
    """sum over heads of the mean squared error on the finite targets (NaN targets are skipped:
    e.g. V_high away from segment boundaries). A head with no finite target adds 0."""
    total = None
    for name, pred in predictions.items():
        if name not in targets:
            raise KeyError(f"no value target for head {name!r} (targets: {sorted(targets)})")
        target = torch.as_tensor(np.asarray(targets[name], dtype=np.float32))
        ok = torch.isfinite(target)
        term = ((pred[ok] - target[ok]) ** 2).mean() if ok.any() else pred.sum() * 0.0
        total = term if total is None else total + term
    if total is None:
        raise ValueError("value_loss got no predictions")
    return total


def value_loss_on_batch(
    model: Any,
    heads: ValueHeads,
    groups: Sequence[TrajectoryGroup],
    targets: dict[str, np.ndarray],
    max_batch_tokens: int = 8192,
) -> torch.Tensor:
    """The value loss of a whole batch with gradients into the heads (and LoRA / the backbone)."""
    steps = flat_steps(groups)
    preds = heads(gather_hidden(model, steps, heads.names, max_batch_tokens))
    return value_loss(preds, targets)
