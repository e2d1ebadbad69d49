"""Policy-gradient losses on token tensors: PPO-clip, KL to a reference, entropy.

The per-token functions take tensors of one shape (``[batch, tokens]`` or flat). The built-in
policy loss (`PPOClip`) and terms (`KLTerm`, `EntropyTerm`) take a `TokenBatch`; they are
registered by name in `creditgym.trainers.losses`, where the learner finds them. Aggregation is
token-mean: a (step-weighted) sum over the tokens that count divided by a denominator the caller
gives, so that micro-batches accumulated into one mini-batch give exactly the mini-batch's token
mean.

PPO-clip (Schulman et al. 2017), per token with ratio rho = exp(logp - logp_old):
    L = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))
Decoupled PPO (asynchronous rollouts, SCALE.md section 3): with the sampler's log-probs mu
given, each token's clipped surrogate is scaled by the truncated importance weight
w = min(exp(logp_old - mu), tis_cap), where logp_old is pi_prox (the learner's old-log-prob pass);
the ratio stays clipped against pi_prox.
Low-variance KL (the "k3" estimator, Schulman 2020; verl's ``low_var_kl``), with
log r = logp_ref - logp:
    KL ~= exp(log r) - log r - 1   (>= 0, unbiased for KL(pi || ref)), clamped to [-10, 10].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from creditgym.trainers.config import KL_TYPES


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
class TokenBatch:
    """What a policy loss and a loss term see: per-token tensors of one micro-batch, flat in
    sample order, and the token count of its whole mini-batch.

    ``mask`` is 1 on the tokens that count and 0 elsewhere (steps left out by
    ``Advantages.mask``); ``weight`` carries each step's ``Advantages.weight`` on its tokens.
    ``denominator`` counts the unmasked tokens of the mini-batch, so micro-batch losses add up
    to the mini-batch's token mean.
    """

    logp: torch.Tensor
    """Log-probs of the sampled tokens under the policy being trained (with gradient)."""
    old_logp: torch.Tensor
    """Log-probs under the policy before this update (recomputed by ``prepare``)."""
    advantages: torch.Tensor
    """Each token's advantage (its step's, or its span's)."""
    mask: torch.Tensor
    weight: torch.Tensor
    denominator: float
    ref_logp: torch.Tensor | None = None
    """Log-probs under the reference policy (None when no term needs it)."""
    entropy: torch.Tensor | None = None
    """Entropy of each token's full distribution (with gradient)."""
    sampler_logp: torch.Tensor | None = None
    """The sampler's log-probs mu of the tokens (decoupled PPO; None: no correction)."""

    def token_mean(self, x: torch.Tensor) -> torch.Tensor:
        """This micro-batch's share of the mini-batch mean of ``x``: the weighted sum over
        unmasked tokens divided by ``denominator``."""
        return token_sum(x, self.mask * self.weight, self.denominator)


@dataclass
class PolicyOutput:
    """A policy loss's result: the scalar loss and how many counted tokens were clipped."""

    loss: torch.Tensor
    clip_count: torch.Tensor
    #: Decoupled PPO: counted tokens whose importance weight hit the cap, and the weights' sum.
    weight_clip_count: torch.Tensor | None = None
    weight_sum: torch.Tensor | None = None


@dataclass
class TermOutput:
    """A loss term's result: what it adds to the loss (None: nothing) and the value it logs
    (``train/<name>``, before its coefficient)."""

    loss: torch.Tensor | None
    value: torch.Tensor


class PPOClip:
    """The PPO-clip surrogate, token-mean over the batch (registered as "ppo_clip")."""

    def __init__(self, clip_low: float = 0.2, clip_high: float = 0.2, tis_cap: float = 2.0):
        self.clip_low, self.clip_high, self.tis_cap = clip_low, clip_high, tis_cap

    def __call__(self, batch: TokenBatch) -> PolicyOutput:
        tok, clipped = ppo_clip(
            batch.logp, batch.old_logp, batch.advantages, self.clip_low, self.clip_high
        )
        with torch.no_grad():
            clip_count = (clipped * batch.mask).sum()
        if batch.sampler_logp is None:
            return PolicyOutput(batch.token_mean(tok), clip_count)
        weight, capped = truncated_weight(batch.old_logp, batch.sampler_logp, self.tis_cap)
        with torch.no_grad():
            w_clip = (capped * batch.mask).sum()
            w_sum = (weight * batch.mask).sum()
        return PolicyOutput(batch.token_mean(weight * tok), clip_count, w_clip, w_sum)


def truncated_weight(
    prox_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoupled PPO's weight min(pi_prox / mu, cap) per token (no gradient) and a 0/1 tensor
    of the tokens where the cap was hit."""
    with torch.no_grad():
        raw = torch.exp(prox_logp.detach() - sampler_logp)
        return torch.clamp(raw, max=cap), (raw > cap).float()


class KLTerm:
    """``coef`` x KL(pi || reference), estimated per token with ``kind`` (registered as "kl").

    With ``coef`` 0 it adds nothing, logs 0 and needs no reference pass.
    """

    def __init__(self, coef: float, kind: str = "low_var_kl"):
        if kind not in KL_TYPES:
            raise ValueError(f"unknown kl type {kind!r}; choose one of {list(KL_TYPES)}")
        self.coef, self.kind = coef, kind
        self.needs_reference = bool(coef)

    def __call__(self, batch: TokenBatch) -> TermOutput:
        if batch.ref_logp is None or not self.coef:
            return TermOutput(None, torch.zeros((), dtype=batch.logp.dtype))
        kl = batch.token_mean(kl_penalty(batch.logp, batch.ref_logp, self.kind))
        return TermOutput(self.coef * kl, kl.detach())


class EntropyTerm:
    """The entropy bonus: subtracts ``coef`` x the token-mean entropy (registered as
    "entropy"); the entropy is logged even when ``coef`` is 0."""

    needs_reference = False

    def __init__(self, coef: float):
        self.coef = coef

    def __call__(self, batch: TokenBatch) -> TermOutput:
        if batch.entropy is None:
            return TermOutput(None, torch.zeros((), dtype=batch.logp.dtype))
        ent = batch.token_mean(batch.entropy)
        return TermOutput(-self.coef * ent if self.coef else None, ent.detach())


def approx_kl_old(batch: TokenBatch) -> torch.Tensor:
    """Diagnostic: token-mean k3 estimate of KL(old || current) over the counted tokens
    (unweighted), without gradient."""
    with torch.no_grad():
        kl = kl_penalty(batch.logp.detach(), batch.old_logp, "low_var_kl")
        return token_sum(kl, batch.mask, batch.denominator)
