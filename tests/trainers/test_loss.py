"""Losses and the loss registry on hand-made tensors, with the arithmetic written out."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from creditgym.trainers import losses
from creditgym.trainers.loss import (
    TermOutput,
    TokenBatch,
    kl_penalty,
    ppo_clip,
    token_logprobs_and_entropy,
)
from creditgym.trainers.losses import (
    available_policies,
    available_policy_losses,
    available_terms,
    build_objective,
    register_term,
)


def test_ppo_clip_by_hand() -> None:
    # ratios 1.5, 0.5, 1.1, 0.7 with advantages +1, +1, -2, -2 and eps = 0.2:
    #  +1, r=1.5: max(-1.5, -1.2) = -1.2 (clipped)
    #  +1, r=0.5: max(-0.5, -0.8) = -0.5 (not clipped: the pessimistic term is the raw one)
    #  -2, r=1.1: max(2.2, 2.2)   = 2.2 (inside the range)
    #  -2, r=0.7: max(1.4, 1.6)   = 1.6 (clipped)
    ratio = torch.tensor([1.5, 0.5, 1.1, 0.7])
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    logp = old + torch.log(ratio)
    adv = torch.tensor([1.0, 1.0, -2.0, -2.0])
    loss, clipped = ppo_clip(logp, old, adv, 0.2, 0.2)
    assert torch.allclose(loss, torch.tensor([-1.2, -0.5, 2.2, 1.6]), atol=1e-6)
    assert clipped.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_clip_higher_is_asymmetric() -> None:
    old = torch.zeros(1)
    logp = torch.log(torch.tensor([1.25]))
    adv = torch.ones(1)
    assert ppo_clip(logp, old, adv, 0.2, 0.2)[0].item() == pytest.approx(-1.2)
    assert ppo_clip(logp, old, adv, 0.2, 0.28)[0].item() == pytest.approx(-1.25)


def test_low_var_kl_by_hand() -> None:
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.0, -1.5])
    # log r = ref - logp = 0, 1, -1;  k3 = e^x - x - 1
    expected = [0.0, math.e - 2.0, math.exp(-1.0)]
    assert kl_penalty(logp, ref).tolist() == pytest.approx(expected, abs=1e-6)
    assert kl_penalty(logp, ref, "kl").tolist() == pytest.approx([0.0, -1.0, 1.0])
    assert kl_penalty(logp, ref, "mse").tolist() == pytest.approx([0.0, 0.5, 0.5])
    # clamped at 10 for wildly different policies
    assert kl_penalty(torch.tensor([-30.0]), torch.tensor([0.0])).item() == 10.0
    with pytest.raises(ValueError, match="unknown kl type"):
        kl_penalty(logp, ref, "k4")


def test_k3_estimates_the_true_kl() -> None:
    # Sampling from pi, E[k3] = KL(pi || ref): check on a 3-symbol distribution.
    pi = torch.tensor([0.6, 0.3, 0.1])
    ref = torch.tensor([0.2, 0.5, 0.3])
    true_kl = float((pi * (pi / ref).log()).sum())
    expectation = float((pi * kl_penalty(pi.log(), ref.log())).sum())
    assert expectation == pytest.approx(true_kl, rel=1e-5)


def test_logprobs_and_entropy_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, -1e9, -1e9]])
    targets = torch.tensor([2, 0])
    logp, ent = token_logprobs_and_entropy(logits, targets)
    # uniform over 4: log(1/4), entropy log 4; second: probs 3/4, 1/4.
    assert logp.tolist() == pytest.approx([math.log(0.25), math.log(0.75)], abs=1e-6)
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert ent.tolist() == pytest.approx([math.log(4.0), h2], abs=1e-6)
    # temperature 2 halves the logits: probs become sqrt(3)/(sqrt(3)+1), 1/(sqrt(3)+1)
    logp_t, _ = token_logprobs_and_entropy(logits, targets, temperature=2.0)
    s3 = math.sqrt(3.0)
    assert logp_t[1].item() == pytest.approx(math.log(s3 / (s3 + 1)), abs=1e-6)


def _config(**kw) -> SimpleNamespace:
    """The learner options the built-in losses read."""
    base = {"clip_low": 0.2, "clip_high": 0.2, "kl_coef": 0.0, "kl_type": "low_var_kl"}
    return SimpleNamespace(**(base | {"entropy_coef": 0.0} | kw))


def _batch(logp, old, adv, mask, denominator, weight=None, **kw) -> TokenBatch:
    weight = torch.ones_like(logp) if weight is None else weight
    return TokenBatch(logp, old, adv, mask, weight, denominator, **kw)


def test_objective_token_mean_and_accumulation() -> None:
    """Micro-batches with the mini-batch denominator add up to the mini-batch token mean, and
    the default objective is PPO-clip + kl_coef KL - entropy_coef entropy."""
    torch.manual_seed(0)
    logp = torch.randn(10) * 0.1 - 1.0
    old = logp.detach() + torch.randn(10) * 0.1
    ref = logp.detach() + torch.randn(10) * 0.1
    adv = torch.randn(10)
    ent = torch.rand(10)
    mask = torch.ones(10)
    objective = build_objective(_config(kl_coef=0.01, entropy_coef=0.001))
    assert objective.policy_name == "ppo_clip" and list(objective.terms) == ["kl", "entropy"]
    assert objective.needs_reference
    whole, _, values = objective(_batch(logp, old, adv, mask, 10, ref_logp=ref, entropy=ent))
    parts = [
        objective(
            _batch(
                logp[a:b], old[a:b], adv[a:b], mask[a:b], 10, ref_logp=ref[a:b], entropy=ent[a:b]
            )
        )[0]
        for a, b in ((0, 3), (3, 10))
    ]
    assert sum(parts).item() == pytest.approx(whole.item(), abs=1e-6)
    pg, _ = ppo_clip(logp, old, adv)
    by_hand = pg.mean() + 0.01 * kl_penalty(logp, ref).mean() - 0.001 * ent.mean()
    assert whole.item() == pytest.approx(float(by_hand), abs=1e-6)
    assert float(values["kl"]) == pytest.approx(float(kl_penalty(logp, ref).mean()), abs=1e-6)
    assert float(values["entropy"]) == pytest.approx(float(ent.mean()), abs=1e-6)


def test_masked_tokens_do_not_count() -> None:
    logp = torch.tensor([-1.0, -1.0, -1.0], requires_grad=True)
    old = torch.tensor([-1.0, -1.0, -1.0])
    adv = torch.tensor([1.0, 5.0, 1.0])
    mask = torch.tensor([1.0, 0.0, 1.0])
    ent = torch.tensor([0.5, 9.0, 0.5])
    objective = build_objective(_config(entropy_coef=0.1))
    loss, out, values = objective(_batch(logp, old, adv, mask, 2, entropy=ent))
    # ratio 1 everywhere: pg = -(1 + 1) / 2 = -1; entropy (0.5 + 0.5) / 2; the masked token's
    # advantage 5 and entropy 9 are ignored.
    assert out.loss.item() == pytest.approx(-1.0)
    assert float(values["entropy"]) == pytest.approx(0.5)
    assert loss.item() == pytest.approx(-1.0 - 0.1 * 0.5)
    loss.backward()
    # d/dlogp of -A * exp(logp - old) / 2 at ratio 1 = -A / 2; zero where masked.
    assert logp.grad.tolist() == pytest.approx([-0.5, 0.0, -0.5])


def test_step_weights_scale_each_tokens_share() -> None:
    logp = torch.tensor([-1.0, -1.0, -1.0], requires_grad=True)
    old = logp.detach().clone()
    adv = torch.tensor([1.0, 1.0, -2.0])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    weight = torch.tensor([2.0, 0.0, 0.5])
    objective = build_objective(_config(kl_coef=0.1))
    loss, out, values = objective(
        _batch(logp, old, adv, torch.ones(3), 3, weight=weight, ref_logp=ref)
    )
    # pg tokens -1, -1, 2 weighted 2, 0, 0.5 over 3 tokens (the denominator is unweighted).
    assert out.loss.item() == pytest.approx((-2.0 + 0.0 + 1.0) / 3)
    k3 = kl_penalty(logp.detach(), ref)
    assert float(values["kl"]) == pytest.approx(float((k3 * weight).sum() / 3), abs=1e-6)
    loss.backward()
    assert logp.grad[1].item() == 0.0  # weight 0: no gradient


def test_a_zero_coefficient_adds_nothing_and_needs_no_reference() -> None:
    objective = build_objective(_config(kl_coef=0.0))
    assert not objective.needs_reference
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    batch = _batch(logp, logp.detach(), torch.ones(2), torch.ones(2), 2, ref_logp=None)
    loss, out, values = objective(batch)
    assert loss.item() == out.loss.item() and float(values["kl"]) == 0.0
    assert float(values["entropy"]) == 0.0  # no entropies given


def test_unknown_names_list_the_registered_ones() -> None:
    assert "ppo_clip" in available_policy_losses() and available_policies is available_policy_losses
    assert {"kl", "entropy"} <= set(available_terms())
    with pytest.raises(
        ValueError, match=r"unknown policy loss 'reinforce'; registered: \['opmd', 'ppo_clip'"
    ):
        build_objective(_config(), policy="reinforce")
    with pytest.raises(ValueError, match=r"unknown loss term 'l2'; registered: \[.*'entropy'"):
        build_objective(_config(), terms=["kl", "l2"])
    with pytest.raises(ValueError, match="listed twice"):
        build_objective(_config(), terms=["kl", "kl"])
    with pytest.raises(ValueError, match="unknown kl type"):
        build_objective(_config(kl_type="k4"))


@pytest.fixture
def logp_l2_term():
    """A term registered for one test: 0.5 x the token mean of logp^2 (then unregistered)."""

    class L2:
        needs_reference = False

        def __init__(self, coef: float):
            self.coef = coef

        def __call__(self, batch: TokenBatch) -> TermOutput:
            value = batch.token_mean(batch.logp**2)
            return TermOutput(self.coef * value, value.detach())

    register_term("test_logp_l2")(lambda config: L2(0.5))
    yield "test_logp_l2"
    losses._TERMS.unregister("test_logp_l2")


def test_a_registered_term_joins_the_objective(logp_l2_term) -> None:
    assert logp_l2_term in available_terms()
    objective = build_objective(_config(), terms=[logp_l2_term])
    logp = torch.tensor([-1.0, -3.0])
    loss, out, values = objective(_batch(logp, logp, torch.zeros(2), torch.ones(2), 2))
    assert float(values[logp_l2_term]) == pytest.approx((1.0 + 9.0) / 2)
    assert loss.item() == pytest.approx(out.loss.item() + 0.5 * 5.0)
    with pytest.raises(ValueError, match="already registered"):
        register_term(logp_l2_term)(lambda config: None)
