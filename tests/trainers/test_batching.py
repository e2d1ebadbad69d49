"""The one token-budget batching helper and the padding every model pass uses."""

from __future__ import annotations

import numpy as np
import torch

from creditgym.trainers.batching import pad_right, token_batches


def test_token_batches_by_hand() -> None:
    # Longest first; a batch grows while longest x count <= 12.
    lengths = [3, 6, 2, 6, 4, 13]
    batches = token_batches(list(range(6)), 12, length=lambda i: lengths[i])
    # 13 is over the budget: alone. Then 6, 6 (12); then 4, 3, 2 (4 x 3 = 12).
    assert batches == [[5], [1, 3], [4, 0, 2]]


def test_token_batches_respect_the_budget_and_keep_every_item() -> None:
    rng = np.random.default_rng(0)
    for budget in (16, 64, 500):
        seqs = [[0] * int(n) for n in rng.integers(1, 40, size=50)]
        batches = token_batches(seqs, budget)
        assert sorted(id(s) for b in batches for s in b) == sorted(id(s) for s in seqs)
        for b in batches:
            assert len(b) == 1 or max(map(len, b)) * len(b) <= budget
            assert len(b[0]) == max(map(len, b))  # the first is the longest
        firsts = [len(b[0]) for b in batches]
        assert firsts == sorted(firsts, reverse=True)


def test_pad_right() -> None:
    ids, mask = pad_right([[5, 6, 7], [8]], pad_id=2)
    assert torch.equal(ids, torch.tensor([[5, 6, 7], [8, 2, 2]]))
    assert torch.equal(mask, torch.tensor([[1, 1, 1], [1, 0, 0]]))
