"""Policy-gradient loss terms on token tensors: PPO-clip, KL to a reference, entropy.

Every function takes per-token tensors of one shape (``[batch, tokens]`` or flat) and a mask of
the tokens that count (response tokens; environment and padding tokens are 0). Aggregation is
token-mean: a sum over all unmasked tokens divided by a denominator the caller gives, so that
micro-batches accumulated into one mini-batch give exactly the mini-batch's token mean.

PPO-clip (Schulman et al. 2017), per token with ratio rho = exp(logp - logp_old):
    L = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))
Low-variance KL (the "k3" estimator, Schulman 2020; verl's ``low_var_kl``), with
log r = logp_ref - logp:
    KL ~= exp(log r) - log r - 1   (>= 0, unbiased for KL(pi || ref)), clamped to [-10, 10].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KL_TYPES = ("low_var_kl", "kl", "mse")


def token_logprobs_and_entropy(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token and the entropy of each position's distribution.

    ``logits``: ``[..., vocab]`` predicting ``targets`` ``[...]``; divided by ``temperature`` so
    the learner scores tokens under the same distribution the sampler drew them from.
    """
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def ppo_clip(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss and a 0/1 tensor of the tokens where clipping was active."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    return loss, (clipped > unclipped).float()


def kl_penalty(
    logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "low_var_kl"
) -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from the sampled tokens' log-probs."""
    if kind == "low_var_kl":
        log_ratio = torch.clamp(ref_logp - logp, -20.0, 20.0)
        return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -10.0, 10.0)
    if kind == "kl":
        return logp - ref_logp
    if kind == "mse":
        return 0.5 * (logp - ref_logp) ** 2
    raise ValueError(f"unknown kl type {kind!r}; choose one of {list(KL_TYPES)}")


def token_sum(x: torch.Tensor, mask: torch.Tensor, denominator: float) -> torch.Tensor:
    """Sum of ``x`` over unmasked tokens, divided by ``denominator`` (token-mean part)."""
    return (x * mask).sum() / max(float(denominator), 1.0)


@dataclass
class LossTerms:
    """The loss of one micro-batch and its parts (each already divided by the denominator)."""

    loss: torch.Tensor
    pg: torch.Tensor
    kl: torch.Tensor
    entropy: torch.Tensor
    clip_count: torch.Tensor
    approx_kl_old: torch.Tensor


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    denominator: float,
    *,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    kl_coef: float = 0.0,
    kl_type: str = "low_var_kl",
    entropy_coef: float = 0.0,
) -> LossTerms:
    """PPO-clip + ``kl_coef`` KL(pi || ref) - ``entropy_coef`` entropy, token-mean over `mask`.

    ``denominator`` is the number of loss tokens of the whole mini-batch, so gradients of
    micro-batches add up to the mini-batch token mean.
    """
    mask = mask.float()
    pg_tok, clipped = ppo_clip(logp, old_logp, advantages, clip_low, clip_high)
    pg = token_sum(pg_tok, mask, denominator)
    loss = pg
    kl = torch.zeros((), dtype=logp.dtype)
    if ref_logp is not None and kl_coef:
        kl = token_sum(kl_penalty(logp, ref_logp, kl_type), mask, denominator)
        loss = loss + kl_coef * kl
    ent = torch.zeros((), dtype=logp.dtype)
    if entropy is not None:
        ent = token_sum(entropy, mask, denominator)
        if entropy_coef:
            loss = loss - entropy_coef * ent
    with torch.no_grad():
        clip_count = (clipped * mask).sum()
        approx_kl_old = token_sum(
            kl_penalty(logp.detach(), old_logp, "low_var_kl"), mask, denominator
        )
    return LossTerms(loss, pg.detach(), kl.detach(), ent.detach(), clip_count, approx_kl_old)
