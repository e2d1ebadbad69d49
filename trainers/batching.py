"""Token-budget micro-batching and right padding, shared by every model pass of the learner.

`token_batches` packs sequences longest first: a micro-batch grows while its padded size (its
first, longest sequence's length x its count) stays within the budget, so the largest batch is
built first and the padding stays small. A sequence longer than the budget gets a batch of its
own. `pad_right` turns one micro-batch into token ids and an attention mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def token_batches(
    items: Sequence[T], max_tokens: int, length: Callable[[T], int] = len
) -> list[list[T]]:
    """``items`` grouped into micro-batches of padded size <= ``max_tokens`` (see the module
    docstring); ``length(item)`` is an item's sequence length. Ties keep their input order."""
    order = sorted(items, key=length, reverse=True)
    out: list[list[T]] = []
    for item in order:
        if out and length(out[-1][0]) * (len(out[-1]) + 1) <= max_tokens:
            out[-1].append(item)
        else:
            out.append([item])
    return out


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[len(seqs), longest]`` token ids and the matching 0/1 attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[b, : len(s)] = 1
    return ids, mask
