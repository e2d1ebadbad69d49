"""R^3L's registered policy loss "opmd": -A log pi / (1 + tau), token mean, no ratio or clip."""

import torch

from creditgym.trainers.config import LearnerConfig
from creditgym.trainers.loss import TokenBatch
from creditgym.trainers.losses import build_objective


def test_opmd_is_minus_advantage_times_logp_over_one_plus_tau():
    # Tokens logp = [-1, -2, -0.5], A = [2, 1, 3], mask [1, 1, 0], denominator 2, tau = 1:
    # L = (-(2)(-1) - (1)(-2)) / (1 + 1) / 2 = 4 / 4 = 1.0; the third token is masked. The old log-probs differ
    # wildly (a ratio of e^5): no ratio enters, so L is unchanged.
    logp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    batch = TokenBatch(
        logp=logp,
        old_logp=logp.detach() - 5.0,
        advantages=torch.tensor([2.0, 1.0, 3.0]),
        mask=torch.tensor([1.0, 1.0, 0.0]),
        weight=torch.ones(3),
        denominator=2.0,
    )
    obj = build_objective(LearnerConfig(opmd_tau=1.0), policy="opmd", terms=[])
    loss, out, _ = obj(batch)
    assert abs(float(loss.detach()) - 1.0) < 1e-6 and float(out.clip_count) == 0.0
    loss.backward()
    # dL/dlogp = -A / (1 + tau) / denominator on counted tokens: [-0.5, -0.25, 0].
    torch.testing.assert_close(logp.grad, torch.tensor([-0.5, -0.25, 0.0]))
    obj0 = build_objective(LearnerConfig(opmd_tau=0.0), policy="opmd", terms=[])
    assert abs(float(obj0(batch)[0].detach()) - 2.0) < 1e-6
