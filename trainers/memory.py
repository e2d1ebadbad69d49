"""A memory estimate of the learner, printed at the start of a run (before an OOM, not after).

The parts, in bytes per rank:

- parameters: every weight of the policy at its dtype (under fsdp2 the decoder layers' share is
  divided by the rank count), plus the frozen reference copy of a full fine-tune with a KL term;
- gradients: one per trainable weight, at the weight's dtype;
- optimizer: AdamW's two moments per trainable weight, at the weight's dtype;
- activations per micro-batch: what autograd keeps for the backward pass of one micro-batch of
  ``micro_batch_tokens`` (padded length x samples). Per token and decoder layer a Llama-style block
  saves about ``8 h + 2 kv + 4 i`` values (h hidden size, kv the key/value width, i the MLP
  width; fitted on Llama blocks with a fused attention kernel, which keeps no L x L scores); with
  gradient checkpointing a layer keeps only its input ``h`` and one layer's activations are alive
  at a time. The scored positions add two fp32 vectors of the vocabulary's size (log-softmax
  and entropy); the estimate scores every token (an upper bound).

`measure_saved_bytes` measures the activation part directly (autograd's saved tensors, counted
once per storage) so tests and ``scripts/gpu_check.sh`` can compare; on CUDA the check compares the
whole estimate against ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from creditgym.trainers.loss import token_logprobs_and_entropy

__all__ = [
    "MemoryEstimate",
    "activation_bytes",
    "activation_parts",
    "estimate",
    "estimate_learner",
    "format_estimate",
    "measure_saved_bytes",
    "vllm_memory_fraction",
]

GiB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per rank of each part (see the module docstring)."""

    parameters: int
    reference: int
    gradients: int
    optimizer: int
    activations_per_micro_batch: int
    micro_batch_tokens: int
    device: str
    #: The device's total memory (None on a CPU).
    device_total: int | None = None

    @property
    def total(self) -> int:
        return (
            self.parameters
            + self.reference
            + self.gradients
            + self.optimizer
            + self.activations_per_micro_batch
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.total}


def _layer_sizes(config: Any) -> tuple[int, int, int, int, int, int]:
    """Hidden size, key/value width, MLP width, layers, heads and vocabulary of an HF config."""
    h = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or h // heads)
    inter = int(getattr(config, "intermediate_size", None) or 4 * h)
    return (
        h,
        kv_heads * head_dim,
        inter,
        int(config.num_hidden_layers),
        heads,
        int(config.vocab_size),
    )


def activation_parts(
    config: Any,
    tokens: int,
    *,
    dtype_bytes: int,
    gradient_checkpointing: bool,
    scored_tokens: int | None = None,
) -> dict[str, int]:
    """Estimated activation bytes of one micro-batch of ``tokens`` (see the module docstring):
    ``saved`` (kept by autograd from the forward to the backward) and ``recompute`` (one layer's
    activations, alive during the backward under gradient checkpointing; 0 otherwise)."""
    h, kv, inter, layers, _, vocab = _layer_sizes(config)
    per_layer = dtype_bytes * (8 * h + 2 * kv + 4 * inter)
    scored = tokens if scored_tokens is None else scored_tokens
    head = tokens * dtype_bytes * 2 * h + scored * 4 * 2 * vocab  # final norm; fp32 logits
    if gradient_checkpointing:
        return {"saved": tokens * layers * dtype_bytes * h + head, "recompute": tokens * per_layer}
    return {"saved": tokens * layers * per_layer + head, "recompute": 0}


def activation_bytes(
    config: Any,
    tokens: int,
    *,
    dtype_bytes: int,
    gradient_checkpointing: bool,
    scored_tokens: int | None = None,
) -> int:
    """`activation_parts` added up: the activation peak of one micro-batch."""
    parts = activation_parts(
        config,
        tokens,
        dtype_bytes=dtype_bytes,
        gradient_checkpointing=gradient_checkpointing,
        scored_tokens=scored_tokens,
    )
    return parts["saved"] + parts["recompute"]


def estimate(
    config: Any,
    *,
    parameters: int,
    trainable: int,
    dtype_bytes: int,
    micro_batch_tokens: int,
    gradient_checkpointing: bool = False,
    reference_copy: bool = False,
    sharded_fraction: float = 0.0,
    world_size: int = 1,
    device: str = "cpu",
    device_total: int | None = None,
    scored_tokens: int | None = None,
) -> MemoryEstimate:
    """The estimate from counts: ``sharded_fraction`` of the weights is split over the ranks."""
    share = (1.0 - sharded_fraction) + sharded_fraction / max(world_size, 1)
    return MemoryEstimate(
        parameters=int(parameters * dtype_bytes * share),
        reference=int(parameters * dtype_bytes) if reference_copy else 0,
        gradients=int(trainable * dtype_bytes * share),
        optimizer=int(2 * trainable * dtype_bytes * share),
        activations_per_micro_batch=activation_bytes(
            config,
            micro_batch_tokens,
            dtype_bytes=dtype_bytes,
            gradient_checkpointing=gradient_checkpointing,
            scored_tokens=scored_tokens,
        ),
        micro_batch_tokens=micro_batch_tokens,
        device=device,
        device_total=device_total,
    )


def estimate_learner(learner: Any, scored_tokens: int | None = None) -> MemoryEstimate:
    """The estimate of a built `creditgym.trainers.learner.Learner` on its device.

    ``scored_tokens``: loss tokens of the largest micro-batch when known (default: every token
    of the budget, an upper bound)."""
    cfg = learner.config
    model = learner.base_model
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in learner.model.parameters() if p.requires_grad)
    if learner.value_heads is not None:
        trainable += sum(p.numel() for p in learner.value_heads.parameters())
    dist = getattr(learner, "dist", None)
    world = int(getattr(dist, "world_size", 1))
    sharded = 0.0
    if getattr(dist, "mode", None) == "fsdp2":
        layers = getattr(model.get_decoder(), "layers", [])
        in_layers = sum(p.numel() for layer in layers for p in layer.parameters())
        sharded = in_layers / max(n_params, 1)
        n_params = int(n_params / ((1 - sharded) + sharded / world))  # DTensor shards: local
    device = learner.device
    total = None
    if device.type == "cuda":
        total = int(torch.cuda.get_device_properties(device).total_memory)
    return estimate(
        model.config,
        parameters=n_params,
        trainable=trainable,
        dtype_bytes=torch.finfo(getattr(torch, cfg.dtype)).bits // 8,
        micro_batch_tokens=cfg.micro_batch_tokens,
        gradient_checkpointing=cfg.gradient_checkpointing,
        reference_copy=learner.reference is not None,
        sharded_fraction=sharded,
        world_size=world,
        device=device.type,
        device_total=total,
        scored_tokens=scored_tokens,
    )


def format_estimate(est: MemoryEstimate) -> str:
    """One line for the run's start."""

    def g(n: int) -> str:
        return f"{n / GiB:.2f}"

    line = (
        f"learner memory estimate per rank ({est.device}, GiB): parameters {g(est.parameters)}"
        + (f" + reference {g(est.reference)}" if est.reference else "")
        + f", gradients {g(est.gradients)}, optimizer {g(est.optimizer)}, activations "
        f"{g(est.activations_per_micro_batch)} per micro-batch of {est.micro_batch_tokens} tokens"
        f" = {g(est.total)}"
    )
    if est.device_total:
        line += f" of {g(est.device_total)}"
        if est.total > est.device_total:
            line += (
                " -- WILL NOT FIT: lower learner.micro_batch_tokens, turn on "
                "learner.gradient_checkpointing, use LoRA or more ranks with data_parallel=fsdp2"
            )
    return line


def vllm_memory_fraction(est: MemoryEstimate, *, headroom: float = 0.1) -> float:
    """The share of the GPU vLLM may take next to the learner on the same device: what the
    learner's estimate leaves free, less ``headroom``, clamped to [0.05, 0.9]."""
    if not est.device_total:
        raise ValueError("vllm_memory_fraction needs a CUDA estimate (device_total)")
    free = 1.0 - est.total / est.device_total - headroom
    return float(min(max(free, 0.05), 0.9))


@contextmanager
def _count_saved(out: dict[str, int], model: Any) -> Iterator[None]:
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[tuple[int, int]] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() in weights:  # a weight (or a view of one), not an activation
            return t
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen.add(key)
            out["bytes"] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def measure_saved_bytes(model: Any, ids: torch.Tensor, scored: int | None = None) -> int:
    """Bytes autograd saves for one training forward of ``ids`` through ``model`` (a causal
    LM), counted once per storage; the LM head is applied to the last ``scored`` positions."""
    out = {"bytes": 0}
    model.train()
    with _count_saved(out, model):
        hidden = model.get_decoder()(
            input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False
        ).last_hidden_state
        k = ids.shape[1] if scored is None else scored
        logits = model.get_output_embeddings()(hidden[:, -k:].reshape(-1, hidden.shape[-1]))
        targets = ids[:, -k:].reshape(-1)
        logp, ent = token_logprobs_and_entropy(logits, targets, 1.0)
        loss = logp.mean() + ent.mean()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return out["bytes"]
