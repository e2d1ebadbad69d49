"""Exact shared-prefix packing: sequences that share a token prefix are forwarded once per prefix.

The sequences of a micro-batch are sorted (so those sharing a prefix sit next to each other) and
laid into rows. Each row is a token-level prefix tree: a token shared by several sequences at the
same depth, after the same earlier tokens, is stored once. A token attends to exactly its own
ancestors in the tree (its sequence's earlier tokens) and itself, through a 4D additive attention
mask, and its position id is its depth, so every token's hidden state is the one the unpacked,
right-padded forward gives, up to floating-point summation order. A row grows until its tree
holds ``row_tokens`` tokens (a sequence longer than that gets a row of its own); rows are then
grouped into micro-batches by the padded-size budget (`creditgym.trainers.batching`).

Supported: decoder-only models whose attention takes a ready 4D mask and explicit position ids
and mixes tokens nowhere else. Verified exact: Llama-family models (``model_type`` "llama":
SmolLM2, the tiny test model), and Qwen2 / Qwen3 / Mistral built from small random configs,
under the "sdpa" and "eager" attention implementations. Anything else (another model type,
flash-attention kernels, sliding windows shorter than a row) falls back to unpacked batches
(`unsupported_reason` says why, once).

`check_exactness` compares log-probs, entropies and gradients packed against unpacked on any
model and device; the tests and ``scripts/gpu_check.sh`` run it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from creditgym.trainers.batching import pad_right, token_batches

#: ``config.model_type`` values the packed forward is verified exact on (see the module docstring).
SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral")
#: Attention implementations that read a custom 4D additive mask.
SUPPORTED_ATTENTION: tuple[str, ...] = ("sdpa", "eager", "creditgym_tree")


def unsupported_reason(model_config: Any, row_tokens: int) -> str | None:
    """Why packing would not be exact for a model with this HF config (None: it is exact)."""
    kind = getattr(model_config, "model_type", None)
    if kind not in SUPPORTED_MODEL_TYPES:
        return f"model type {kind!r} is not one of {list(SUPPORTED_MODEL_TYPES)}"
    attn = getattr(model_config, "_attn_implementation", None) or "sdpa"
    if attn not in SUPPORTED_ATTENTION:
        return f"attention implementation {attn!r} is not one of {list(SUPPORTED_ATTENTION)}"
    window = getattr(model_config, "sliding_window", None)
    uses_window = getattr(model_config, "use_sliding_window", window is not None)
    if window is not None and uses_window and int(window) < row_tokens:
        return f"a sliding window of {window} tokens is shorter than a packed row ({row_tokens})"
    return None


@dataclass
class Layout:
    """Model inputs of one micro-batch and where each sequence's tokens sit in them.

    ``ids``, ``position_ids`` are ``[rows, width]``; ``attention_mask`` is the 2D 0/1 padding
    mask (unpacked) or a ``[rows, 1, width, width]`` additive mask (packed). Token ``i`` of
    sequence ``j`` is at ``(rows[j], cols[j][i])``. ``forwarded`` counts the real (non-padding)
    tokens the forward computes.
    """

    ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor | None
    rows: list[int]
    cols: list[list[int]]
    forwarded: int
    #: Packed rows only: per row, ``(keys, mask)`` for `tree_attention_forward`. The row's query
    #: columns are cut into blocks of `QUERY_BLOCK`; ``keys[b]`` (``[blocks, K]``) lists the
    #: columns any query of block b may attend to (padded with column 0) and ``mask[b, 0]``
    #: (``[blocks, 1, QUERY_BLOCK, K]``) is the additive mask over them.
    plan: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def inputs(self) -> dict[str, Any]:
        """Keyword arguments for a decoder's forward."""
        out: dict[str, Any] = {"input_ids": self.ids, "attention_mask": self.attention_mask}
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids
        if self.plan is not None:
            out["tree_plan"] = self.plan
        return out

    def to(self, device: Any) -> Layout:
        pos = None if self.position_ids is None else self.position_ids.to(device)
        plan = None
        if self.plan is not None:
            plan = [(k.to(device), m.to(device)) for k, m in self.plan]
        return Layout(
            self.ids.to(device),
            self.attention_mask.to(device),
            pos,
            self.rows,
            self.cols,
            self.forwarded,
            plan,
        )


def padded_layout(seqs: Sequence[Sequence[int]]) -> Layout:
    """The unpacked layout: one right-padded row per sequence."""
    ids, mask = pad_right(seqs)
    cols = [list(range(len(s))) for s in seqs]
    return Layout(ids, mask, None, list(range(len(seqs))), cols, sum(len(s) for s in seqs))


class _Row:
    """One row's prefix tree: ``children[node][token] -> node``, node = column in the row."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.depth: list[int] = []
        self.children: list[dict[int, int]] = []
        self.root: dict[int, int] = {}
        self.paths: list[list[int]] = []

    def new_nodes(self, seq: Sequence[int]) -> int:
        """How many tokens inserting ``seq`` would add."""
        table, i = self.root, 0
        for i, tok in enumerate(seq):
            node = table.get(tok)
            if node is None:
                return len(seq) - i
            table = self.children[node]
        return 0

    def insert(self, seq: Sequence[int]) -> None:
        table, path = self.root, []
        for d, tok in enumerate(seq):
            node = table.get(tok)
            if node is None:
                node = len(self.tokens)
                table[tok] = node
                self.tokens.append(int(tok))
                self.depth.append(d)
                self.children.append({})
            path.append(node)
            table = self.children[node]
        self.paths.append(path)


def pack_rows(seqs: Sequence[Sequence[int]], row_tokens: int) -> list[list[int]]:
    """Indices of ``seqs`` per packed row, in the given order (callers sort first)."""
    rows: list[list[int]] = []
    tree: _Row | None = None
    for j, seq in enumerate(seqs):
        if tree is None or len(tree.tokens) + tree.new_nodes(seq) > row_tokens:
            tree = _Row()
            rows.append([])
        tree.insert(seq)
        rows[-1].append(j)
    return rows


def packed_size(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens of one prefix tree holding all of ``seqs``."""
    tree = _Row()
    for s in seqs:
        tree.insert(s)
    return len(tree.tokens)


def packed_layout(
    seqs: Sequence[Sequence[int]],
    row_tokens: int,
    dtype: torch.dtype = torch.float32,
    query_block: int | None = None,
) -> Layout:
    """The packed layout of ``seqs`` (rows as `pack_rows` cuts them, in the given order).

    ``dtype`` is the additive mask's (the model's compute dtype): 0 where a token may attend,
    the dtype's minimum elsewhere. A padding column attends to itself only. ``plan`` cuts each
    row's queries into blocks of ``query_block`` (default `QUERY_BLOCK`) for
    `tree_attention_forward`.
    """
    trees = []
    row_of: list[int] = [0] * len(seqs)
    for r, members in enumerate(pack_rows(seqs, row_tokens)):
        tree = _Row()
        for j in members:
            tree.insert(seqs[j])
            row_of[j] = r
        trees.append((tree, members))
    width = max(len(t.tokens) for t, _ in trees)
    n = len(trees)
    ids = torch.zeros((n, width), dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    allowed = torch.zeros((n, width, width), dtype=torch.bool)
    cols: list[list[int]] = [[] for _ in seqs]
    for r, (tree, members) in enumerate(trees):
        k = len(tree.tokens)
        ids[r, :k] = torch.as_tensor(tree.tokens, dtype=torch.long)
        pos[r, :k] = torch.as_tensor(tree.depth, dtype=torch.long)
        for j, path in zip(members, tree.paths, strict=True):
            cols[j] = path
            idx = torch.as_tensor(path, dtype=torch.long)
            lower = torch.ones((len(path), len(path)), dtype=torch.bool).tril_()
            allowed[r, idx.unsqueeze(1), idx.unsqueeze(0)] |= lower
        pad = torch.arange(k, width)
        allowed[r, pad, pad] = True
    mask = torch.zeros((n, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
    forwarded = sum(len(t.tokens) for t, _ in trees)
    plan = [_block_plan(allowed[r], query_block or QUERY_BLOCK, dtype) for r in range(n)]
    return Layout(ids, mask, pos, row_of, cols, forwarded, plan)


def _block_plan(allowed: torch.Tensor, qb: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """One row's query blocks: the key columns each block may see and its mask over them."""
    width = allowed.shape[0]
    starts = range(0, width, qb)
    keys = [allowed[a : a + qb].any(0).nonzero()[:, 0] for a in starts]
    k = max(len(c) for c in keys)
    index = torch.zeros((len(keys), k), dtype=torch.long)
    block = torch.zeros((len(keys), qb, k), dtype=torch.bool)
    for b, (a, c) in enumerate(zip(starts, keys, strict=True)):
        index[b, : len(c)] = c
        sub = allowed[a : a + qb][:, c]
        block[b, : sub.shape[0], : len(c)] = sub
        block[b, sub.shape[0] :, 0] = True  # padding queries past the row's end: any one key
    mask = torch.zeros((len(keys), 1, qb, k), dtype=dtype)
    mask.masked_fill_(~block.unsqueeze(1), torch.finfo(dtype).min)
    return index, mask


# ------------------------------------------------------------------------------ tree attention
#: Query columns per block of `tree_attention_forward`.
QUERY_BLOCK = 128
#: The attention implementation name `use_tree_attention` registers with transformers.
TREE_ATTENTION = "creditgym_tree"


def tree_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    tree_plan: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention over packed rows that reads only the keys a block of queries may see.

    A packed row's mask lets a token see its own sequence only, so most of a long row's L x L
    scores are masked out; sdpa would still compute them all. Given the layout's ``tree_plan``,
    each block of `QUERY_BLOCK` queries attends to the gathered columns any of them may see,
    under the same mask restricted to those columns (all blocks of a row in one batched sdpa
    call): the full masked attention up to summation order, since a masked key adds
    exp(-inf) = 0. Without a plan (unpacked batches, generation) this is transformers' sdpa.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if tree_plan is None or attention_mask is None or attention_mask.dim() != 4:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    p = dropout if module.training else 0.0
    heads, width, dim = query.shape[1], query.shape[2], query.shape[3]
    rows = []
    for r, (index, mask) in enumerate(tree_plan):
        blocks, k = index.shape
        qb = mask.shape[2]
        q = torch.nn.functional.pad(query[r], (0, 0, 0, blocks * qb - width))
        q = q.view(heads, blocks, qb, dim).transpose(0, 1)
        flat = index.reshape(-1)
        kk = key[r].index_select(1, flat).view(heads, blocks, k, dim).transpose(0, 1)
        vv = value[r].index_select(1, flat).view(heads, blocks, k, dim).transpose(0, 1)
        out = torch.nn.functional.scaled_dot_product_attention(
            q, kk, vv, attn_mask=mask, dropout_p=p, scale=scaling
        )
        rows.append(out.transpose(0, 1).reshape(heads, blocks * qb, dim)[:, :width])
    return torch.stack(rows).transpose(1, 2).contiguous(), None


def use_tree_attention(model: Any) -> bool:
    """Switch a model that runs transformers' "sdpa" attention to `tree_attention_forward`
    (registered as `TREE_ATTENTION`, with sdpa's mask builder, so every other forward is
    unchanged). Returns whether it switched; other implementations are left as they are."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    config = model.config
    current = getattr(config, "_attn_implementation", None)
    if current == TREE_ATTENTION:
        return True
    if current != "sdpa":
        return False
    AttentionInterface.register(TREE_ATTENTION, tree_attention_forward)
    AttentionMaskInterface.register(TREE_ATTENTION, sdpa_mask)
    model.set_attn_implementation(TREE_ATTENTION)
    return True


def prefix_order(seqs: Sequence[Sequence[int]]) -> list[int]:
    """Indices of ``seqs`` sorted by their tokens, so sequences sharing a prefix are adjacent."""
    return sorted(range(len(seqs)), key=lambda j: list(seqs[j]))


def packed_micro_batches(
    seqs: Sequence[Sequence[int]], max_tokens: int, row_tokens: int
) -> list[list[int]]:
    """Indices of ``seqs`` grouped into micro-batches of packed rows.

    Sequences are sorted by prefix and cut into rows (`pack_rows`); rows are grouped so that a
    micro-batch's padded size (its widest row x its rows) stays within ``max_tokens``. Within a
    micro-batch the indices are in row order, so `packed_layout` on them rebuilds the same rows.
    """
    order = prefix_order(seqs)
    rows = [[order[i] for i in r] for r in pack_rows([seqs[j] for j in order], row_tokens)]
    sizes = {id(r): packed_size([seqs[j] for j in r]) for r in rows}
    groups = token_batches(rows, max_tokens, length=lambda r: sizes[id(r)])
    return [[j for r in g for j in r] for g in groups]


# ----------------------------------------------------------------------------------- exactness
def score_tokens(
    model: Any,
    layout: Layout,
    seqs: Sequence[Sequence[int]],
    starts: Sequence[int],
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of tokens ``starts[j]:`` of every sequence ``j`` (flat, in order),
    from one decoder forward over ``layout`` and the LM head at the scored positions only."""
    from creditgym.trainers.loss import token_logprobs_and_entropy

    device = next(model.parameters()).device
    lay = layout.to(device)
    hidden = model.get_decoder()(**lay.inputs(), use_cache=False).last_hidden_state
    rows, cols, targets = [], [], []
    for j, seq in enumerate(seqs):
        for i in range(starts[j], len(seq)):
            rows.append(layout.rows[j])
            cols.append(layout.cols[j][i - 1])
            targets.append(int(seq[i]))
    picked = hidden[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)]
    logits = model.get_output_embeddings()(picked)
    return token_logprobs_and_entropy(logits, torch.as_tensor(targets, device=device), temperature)


def demo_sequences(vocab: int, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Seeded token sequences shaped like a steps-mode batch: a system prefix shared by all, a
    task text per group, a step-specific tail, identical prompts with different responses, and
    one sequence that is a prefix of another. Returns (sequences, first response index of each)."""
    g = torch.Generator().manual_seed(seed)

    def toks(n: int) -> list[int]:
        return torch.randint(5, vocab, (n,), generator=g).tolist()

    system = toks(24)
    seqs, starts = [], []
    for _ in range(3):
        task = toks(16)
        shared_obs = toks(9)
        for k in range(4):
            prompt = system + task + (shared_obs if k < 2 else toks(7 + k))
            response = toks(3 + k)
            seqs.append(prompt + response)
            starts.append(len(prompt))
    seqs.append(list(seqs[0][: starts[0] + 1]))  # a prefix of another sequence
    starts.append(starts[0])
    seqs.append(toks(11) + toks(4))  # shares nothing
    starts.append(11)
    return seqs, starts


def check_exactness(
    model: Any,
    device: Any = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    seed: int = 0,
    row_tokens: int = 96,
    tree_attention: bool = True,
    query_block: int = 16,
) -> dict[str, float]:
    """Packed against unpacked on ``model`` (moved to ``device`` / ``dtype``, every parameter
    trainable): max |log-prob| and |entropy| differences, gradient cosine and max relative
    difference (max |g_packed - g| / max |g|) of a seeded weighted loss over all scored tokens,
    and the tokens each forwarded. With ``tree_attention`` an sdpa model is switched to
    `tree_attention_forward` first, as the learner does (query blocks of ``query_block``, so a
    short test row has several). The model is left in eval mode with no gradients."""
    if tree_attention:
        use_tree_attention(model)
    model = model.to(device=device, dtype=dtype)
    model.eval()
    vocab = int(model.get_output_embeddings().weight.shape[0])
    seqs, starts = demo_sequences(min(vocab, 4096), seed)
    n_scored = sum(len(s) - st for s, st in zip(seqs, starts, strict=True))
    w = torch.randn(n_scored, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    results: dict[str, Any] = {}
    for name, layout in (
        ("unpacked", padded_layout(seqs)),
        ("packed", packed_layout(seqs, row_tokens, dtype, query_block)),
    ):
        model.zero_grad(set_to_none=True)
        logp, ent = score_tokens(model, layout, seqs, starts)
        ((w * logp).sum() + 0.1 * (w * ent).sum()).backward()
        grad = torch.cat([p.grad.reshape(-1).double() for p in params if p.grad is not None])
        results[name] = (logp.detach().float(), ent.detach().float(), grad, layout.forwarded)
    model.zero_grad(set_to_none=True)
    (lu, eu, gu, nu), (lp, ep, gp, npk) = results["unpacked"], results["packed"]
    cosine = torch.nn.functional.cosine_similarity(gu, gp, dim=0)
    return {
        "logp_max_abs": float((lu - lp).abs().max()),
        "logp_max_rel": float(((lu - lp).abs() / lu.abs().clamp_min(1.0)).max()),
        "entropy_max_abs": float((eu - ep).abs().max()),
        "entropy_max_rel": float(((eu - ep).abs() / eu.abs().clamp_min(1.0)).max()),
        "grad_cosine": float(cosine),
        "grad_max_rel": float((gu - gp).abs().max() / gu.abs().max().clamp_min(1e-30)),
        "tokens_unpacked": float(nu),
        "tokens_packed": float(npk),
        "scored_tokens": float(n_scored),
        "attention": str(getattr(model.config, "_attn_implementation", None)),
    }
