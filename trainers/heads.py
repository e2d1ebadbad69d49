"""Value heads on the policy backbone, served as the credit module declares them.

A credit module that needs values declares its heads and where each reads
(``module.value_heads``, e.g. PPO ``{"v": "last_prompt_token"}``, HiPER ``{"high":
"last_prompt_token", "low": "subgoal_end", "term": "last_prompt_token"}``); the learner builds
exactly those (`ValueHeads`), reads them in its no-grad ``prepare`` pass into ``Step.values``, and
regresses them on the module's targets (``CriticAdvantages.targets``) inside the policy update.

A head is a linear map from the backbone's last hidden state at one token of a step to a scalar.
Heads live outside the policy (a separate `torch.nn.Module`), so under LoRA the adapter and the
heads train together while the frozen base weights stay untouched, and the heads save and load
on their own. Read positions (`creditgym.credit.base.READ_POSITIONS`, resolved by `read_offset`):

- ``last_prompt_token``: the state the turn acts in;
- ``subgoal_end``: the last token of the response's ``<subgoal>`` span (HiPER's V_low sees the
  subgoal it executes); the last prompt token when the step has no such span.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from creditgym.credit.base import READ_POSITIONS
from creditgym.credit.trajectory import Step


def check_heads(spec: Mapping[str, str]) -> dict[str, str]:
    """``spec`` (head name -> read position) as a dict; raises on an unknown position."""
    out = {}
    for name, where in dict(spec).items():
        if where not in READ_POSITIONS:
            raise ValueError(
                f"value head {name!r} reads at {where!r}; known positions: {list(READ_POSITIONS)}"
            )
        out[str(name)] = where
    return out


def read_offset(step: Step, where: str) -> int:
    """Offset into the step's response of the token a head reading at ``where`` sees (-1: the
    last prompt token)."""
    if where == "subgoal_end" and step.spans and step.spans.get("subgoal"):
        return int(step.spans["subgoal"][-1][1]) - 1
    if where in READ_POSITIONS:
        return -1
    raise ValueError(f"unknown read position {where!r}; known: {list(READ_POSITIONS)}")


class ValueHeads(torch.nn.Module):
    """One linear head per name on hidden states of size ``hidden_size`` (float32).

    Weights are drawn from one generator seeded with ``seed``, head after head in ``names``
    order (N(0, 1/hidden_size)); biases start at 0.
    """

    def __init__(self, hidden_size: int, names: Sequence[str], seed: int = 0):
        super().__init__()
        if not names:
            raise ValueError("ValueHeads needs at least one head name")
        gen = torch.Generator().manual_seed(seed)
        self.heads = torch.nn.ModuleDict()
        for name in names:
            head = torch.nn.Linear(hidden_size, 1)
            with torch.no_grad():
                head.weight.normal_(0.0, 1.0 / math.sqrt(hidden_size), generator=gen)
                head.bias.zero_()
            self.heads[name] = head

    @property
    def names(self) -> list[str]:
        return list(self.heads.keys())

    def forward(self, hidden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{name: [n, hidden_size]}`` -> ``{name: [n]}``."""
        return {n: self.heads[n](h.float()).squeeze(-1) for n, h in hidden.items()}


def value_targets(
    targets: Mapping[str, np.ndarray], served: Sequence[str], n_steps: int
) -> dict[str, np.ndarray]:
    """The credit module's value targets by head as float arrays of ``n_steps`` (NaN: no target
    at that step), checked against the heads the learner serves."""
    unknown = sorted(set(targets) - set(served))
    if unknown:
        raise ValueError(
            f"value targets for heads {unknown} but the learner serves {list(served)}: build the "
            "learner with the credit module's value_heads"
        )
    out = {}
    for name, t in targets.items():
        arr = np.asarray(t, dtype=np.float64)
        if arr.shape != (n_steps,):
            raise ValueError(f"value targets {name!r} have shape {arr.shape}, need ({n_steps},)")
        out[name] = arr
    return out


def value_loss(
    predictions: Mapping[str, torch.Tensor],
    targets: Mapping[str, np.ndarray],
    index: Sequence[int],
    counts: Mapping[str, int],
) -> torch.Tensor:
    """Sum over heads of one micro-batch's share of the mini-batch mean squared error.

    ``predictions[head]`` holds one value per step of the micro-batch, whose flat step indices
    are ``index``; ``counts[head]`` is the number of finite targets of that head in the whole
    mini-batch, so the shares of its micro-batches add up to the mean. NaN targets are skipped.
    """
    device = next(iter(predictions.values())).device if predictions else None
    total = torch.zeros((), device=device)
    for name, t in targets.items():
        target = torch.as_tensor(t[list(index)], dtype=torch.float32, device=device)
        ok = torch.isfinite(target)
        if counts[name] and ok.any():
            err = (predictions[name][ok] - target[ok]) ** 2
            total = total + err.sum() / counts[name]
    return total
