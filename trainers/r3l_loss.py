"""R^3L's policy loss "opmd" (arXiv 2601.03715; reference ``opmd_policy_loss.py``
``OPMDPolicyLossFn`` in shiweijiezero/R3L on Trinity-RFT), registered beside "ppo_clip".

Per token, with the step's advantage A (credit module "r3l") and tau = ``learner.opmd_tau``:

    L = -A log pi(token) / (1 + tau)

token-mean over the counted tokens; no importance ratio and no clipping (the paper drops both,
and KL; the reference's ALFWorld config keeps a small k2 KL, 0.001, which the "kl" term with
``kl_type: mse`` reproduces). The old log-probs are not used.
"""

from __future__ import annotations

from typing import Any

from creditgym.trainers.losses import register_policy_loss


class OPMDLoss:
    """-A log pi / (1 + tau), token mean (registered as "opmd")."""

    def __init__(self, tau: float = 1.0):
        if tau < 0:
            raise ValueError(f"opmd tau={tau!r} must be >= 0")
        self.tau = tau

    def __call__(self, batch: Any) -> Any:
        import torch

        from creditgym.trainers.loss import PolicyOutput

        tok = -batch.advantages * batch.logp / (1.0 + self.tau)
        return PolicyOutput(batch.token_mean(tok), torch.zeros((), dtype=batch.logp.dtype))


@register_policy_loss("opmd")
def _opmd(config: Any) -> OPMDLoss:
    return OPMDLoss(getattr(config, "opmd_tau", 1.0))
