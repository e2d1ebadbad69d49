"""Loss terms on hand-made tensors, with the arithmetic written out."""

from __future__ import annotations

import math

import pytest
import torch

from creditgym.trainers.loss import kl_penalty, policy_loss, ppo_clip, token_logprobs_and_entropy


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


def test_policy_loss_token_mean_and_accumulation() -> None:
    """Micro-batches with the mini-batch denominator add up to the mini-batch token mean."""
    torch.manual_seed(0)
    logp = torch.randn(10) * 0.1 - 1.0
    old = logp.detach() + torch.randn(10) * 0.1
    ref = logp.detach() + torch.randn(10) * 0.1
    adv = torch.randn(10)
    ent = torch.rand(10)
    mask = torch.ones(10)
    kw = {"kl_coef": 0.01, "entropy_coef": 0.001}
    whole = policy_loss(logp, old, adv, mask, 10, ref_logp=ref, entropy=ent, **kw)
    parts = [
        policy_loss(
            logp[a:b], old[a:b], adv[a:b], mask[a:b], 10, ref_logp=ref[a:b], entropy=ent[a:b], **kw
        )
        for a, b in ((0, 3), (3, 10))
    ]
    assert float(sum(p.loss for p in parts)) == pytest.approx(float(whole.loss), abs=1e-6)
    pg, _ = ppo_clip(logp, old, adv)
    by_hand = pg.mean() + 0.01 * kl_penalty(logp, ref).mean() - 0.001 * ent.mean()
    assert float(whole.loss) == pytest.approx(float(by_hand), abs=1e-6)


def test_masked_tokens_do_not_count() -> None:
    logp = torch.tensor([-1.0, -1.0, -1.0], requires_grad=True)
    old = torch.tensor([-1.0, -1.0, -1.0])
    adv = torch.tensor([1.0, 5.0, 1.0])
    mask = torch.tensor([1.0, 0.0, 1.0])
    terms = policy_loss(logp, old, adv, mask, 2)
    # ratio 1 everywhere: loss = -(1 + 1) / 2 = -1; the masked token's advantage 5 is ignored.
    assert terms.loss.item() == pytest.approx(-1.0)
    terms.loss.backward()
    # d/dlogp of -A * exp(logp - old) / 2 at ratio 1 = -A / 2; zero where masked.
    assert logp.grad.tolist() == pytest.approx([-0.5, 0.0, -0.5])
