"""EPO: entropy-regularised policy optimisation with entropy smoothing (arXiv 2509.22576; code
WujiangXu/EPO), as the loss term "epo".

Minimised with the policy loss L_MT (PPO-clip):

    L_EPO = L_MT - lambda [L_H - beta_k L_smooth]
    P(H)  = [kappa_l Hbar_W - H]_+ + [H - kappa_r Hbar_W]_+         per token
    L_smooth = mean(alpha P),  L_H = mean(H),  beta_k = 1 + exp(-gamma k / floor(K / 2))

H is each response token's full-vocabulary entropy (with gradient), Hbar_W the mean of the
history of per-iteration batch-mean token entropies (the old-log-prob pass's, cumulative, not
sliding), k the number of iterations in that history and K the planned total; L_smooth = 0 while
the history is empty. Defaults: the paper's Tables 2-3 for ALFWorld (lambda 0.001, kappa 0 / 2,
gamma 3, alpha 0.1).

Options (``loss.term_options.epo``): ``smooth="paper"`` (default: the paper's differentiable
penalty) or ``"off"``, which keeps only the entropy bonus in the gradient and logs the penalty,
the gradient of the reference code (its penalty is piecewise constant, zero gradient).
``aggregate="token"``: the means above are token means over the mini-batch (the reference
code's L_H); the paper's per-turn then per-trajectory mean is not implemented (the learner's
token batch carries no sample boundaries). ``history="global"`` only (the reference code's
per-turn-index history is not implemented).

The trainer feeds the history: `EPOTerm.end_iteration(groups)` appends the batch's token-mean
``Step.entropies`` (the term asks for the old-log-prob pass before credit with
``needs_old_entropy``); the history is checkpointed (`state_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from creditgym.trainers.losses import register_term

__all__ = ["EPOTerm", "beta_k", "smoothing_penalty"]

SMOOTH_MODES = ("paper", "off")


def beta_k(k: int, total: int, gamma: float = 3.0) -> float:
    """beta_k = 1 + exp(-gamma k / k_mid), k_mid = floor(K / 2) (at least 1)."""
    k_mid = max(total // 2, 1)
    return 1.0 + math.exp(-gamma * k / k_mid)


def smoothing_penalty(entropy: Any, hbar: float, kappa_l: float, kappa_r: float) -> Any:
    """P = [kappa_l Hbar - H]_+ + [H - kappa_r Hbar]_+ per token (torch or numpy)."""
    lo, hi = kappa_l * hbar, kappa_r * hbar
    try:
        import torch

        if isinstance(entropy, torch.Tensor):
            return torch.relu(lo - entropy) + torch.relu(entropy - hi)
    except ImportError:  # pragma: no cover
        pass
    h = np.asarray(entropy, dtype=np.float64)
    return np.maximum(lo - h, 0.0) + np.maximum(h - hi, 0.0)


class EPOTerm:
    """The EPO loss term (module docstring); logs L_H, and its state is the entropy history."""

    needs_reference = False
    needs_old_entropy = True

    def __init__(
        self,
        coef: float = 0.001,
        kappa_l: float = 0.0,
        kappa_r: float = 2.0,
        gamma: float = 3.0,
        alpha: float = 0.1,
        smooth: str = "paper",
        aggregate: str = "token",
        history: str = "global",
        total_iterations: int = 1,
    ):
        self.configure(
            coef=coef, kappa_l=kappa_l, kappa_r=kappa_r, gamma=gamma, alpha=alpha,
            smooth=smooth, aggregate=aggregate, history=history,
            total_iterations=total_iterations,
        )  # fmt: skip
        self.history: list[float] = []
        self.last: dict[str, float] = {}

    def configure(self, **options: Any) -> None:
        """Set options (the trainer passes ``loss.term_options.epo`` and the planned K)."""
        known = {
            "coef", "kappa_l", "kappa_r", "gamma", "alpha", "smooth", "aggregate", "history",
            "total_iterations",
        }  # fmt: skip
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"loss term 'epo' has no option(s) {unknown}; options: {sorted(known)}"
            )
        for key, value in options.items():
            setattr(self, "history_mode" if key == "history" else key, value)
        if self.smooth not in SMOOTH_MODES:
            raise ValueError(
                f"epo smooth={self.smooth!r} is not valid; choose one of {list(SMOOTH_MODES)}"
            )
        if self.aggregate != "token":
            raise ValueError("epo aggregate: only 'token' is implemented (module docstring)")
        if self.history_mode != "global":
            raise ValueError("epo history: only 'global' is implemented (module docstring)")
        if not 0 <= self.kappa_l <= self.kappa_r:
            raise ValueError(
                f"epo needs 0 <= kappa_l <= kappa_r, got {self.kappa_l}, {self.kappa_r}"
            )
        if self.coef < 0 or self.alpha < 0 or int(self.total_iterations) < 1:
            raise ValueError("epo: coef and alpha must be >= 0 and total_iterations >= 1")

    @property
    def k(self) -> int:
        """Iterations in the history (0 during the first update)."""
        return len(self.history)

    @property
    def hbar(self) -> float | None:
        """Hbar_W: the history's mean (None while empty)."""
        return float(np.mean(self.history)) if self.history else None

    def __call__(self, batch: Any) -> Any:
        import torch

        from creditgym.trainers.loss import TermOutput

        if batch.entropy is None:
            return TermOutput(None, torch.zeros((), dtype=batch.logp.dtype))
        ent = batch.token_mean(batch.entropy)
        loss = -self.coef * ent
        hbar = self.hbar
        if hbar is not None:
            pen = batch.token_mean(
                self.alpha * smoothing_penalty(batch.entropy, hbar, self.kappa_l, self.kappa_r)
            )
            b = beta_k(self.k, int(self.total_iterations), self.gamma)
            if self.smooth == "paper":
                loss = loss + self.coef * b * pen
            self.last = {"smooth": float(pen.detach()), "beta": b}
        return TermOutput(loss if self.coef else None, ent.detach())

    def end_iteration(self, groups: Sequence[Any]) -> float | None:
        """Append the batch's token-mean old entropy (``Step.entropies``) to the history."""
        total, count = 0.0, 0
        for g in groups:
            for t in g.trajectories:
                for s in t.steps:
                    if s.entropies is not None and len(s.entropies):
                        total += float(np.sum(s.entropies))
                        count += len(s.entropies)
        if not count:
            return None
        value = total / count
        self.history.append(value)
        return value

    def state_dict(self) -> dict[str, Any]:
        return {"name": "epo", "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != "epo":
            raise ValueError(
                f"the checkpoint's loss-term state is {state.get('name')!r}, not 'epo'"
            )
        self.history = [float(x) for x in state["history"]]


@register_term("epo")
def _epo(config: Any) -> EPOTerm:
    # The coefficients come from ``loss.term_options.epo`` (the trainer calls `configure`).
    return EPOTerm()
