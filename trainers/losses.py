"""The learner's objective by name: one registered policy loss plus a list of registered terms.

A policy loss factory takes the learner's config and returns a callable ``loss(batch) ->
PolicyOutput``; a term factory returns a callable ``term(batch) -> TermOutput`` with a
``needs_reference`` attribute (True makes the learner score the reference policy). Both see a
`creditgym.trainers.loss.TokenBatch` of per-token tensors and aggregate with its `token_mean`.
The objective is ``policy + sum(term losses)``; each term's value is logged as ``train/<name>``.

Built in: the policy loss "ppo_clip" (``clip_low``, ``clip_high``; ``tis_cap`` for the
decoupled-PPO weight when the learner passes sampler log-probs) and the terms "kl"
(``kl_coef``, ``kl_type``) and "entropy" (``entropy_coef``); the learner's default objective is
``ppo_clip`` with ``["kl", "entropy"]``, today's loss. Register more with `register_policy_loss`
and `register_term`; an unknown name is an error listing the registered ones. This module imports
no torch until an objective is built, so configs can be checked without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from creditgym.trainers.registry import Registry

#: The learner's objective when the config names none: today's PPO-clip + KL + entropy bonus.
DEFAULT_POLICY = "ppo_clip"
DEFAULT_TERMS: tuple[str, ...] = ("kl", "entropy")

Factory = Callable[[Any], Any]

# R^3L (issue 18) registers the policy loss "opmd", EPO (issue 19) the loss term "epo".
_POLICIES: Registry[Factory] = Registry("policy loss", builtins=("creditgym.trainers.r3l_loss",))
_TERMS: Registry[Factory] = Registry("loss term", builtins=("creditgym.trainers.epo",))


def register_policy_loss(name: str) -> Callable[[Factory], Factory]:
    """Decorator: ``factory(config) -> loss`` becomes the policy loss ``name``."""
    return _POLICIES.register(name)


def register_term(name: str) -> Callable[[Factory], Factory]:
    """Decorator: ``factory(config) -> term`` becomes the loss term ``name``."""
    return _TERMS.register(name)


def available_policy_losses() -> list[str]:
    """Names of the registered policy losses."""
    return _POLICIES.available()


#: The name the config's registry check (``loss.policy``) calls.
available_policies = available_policy_losses


def available_terms() -> list[str]:
    """Names of the registered loss terms."""
    return _TERMS.available()


@dataclass
class Objective:
    """A built policy loss and its terms (see `build_objective`)."""

    policy_name: str
    policy: Any
    terms: dict[str, Any]

    @property
    def needs_reference(self) -> bool:
        """Whether any term reads reference log-probs."""
        return any(getattr(t, "needs_reference", False) for t in self.terms.values())

    def __call__(self, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        """``(loss, policy output, {term name: logged value})`` of one micro-batch."""
        out = self.policy(batch)
        loss = out.loss
        values = {}
        for name, term in self.terms.items():
            part = term(batch)
            if part.loss is not None:
                loss = loss + part.loss
            values[name] = part.value
        return loss, out, values


def build_objective(
    config: Any, policy: str = DEFAULT_POLICY, terms: Sequence[str] = DEFAULT_TERMS
) -> Objective:
    """The policy loss ``policy`` plus ``terms`` (in order), each built from ``config``."""
    if isinstance(terms, str):
        raise TypeError(f"terms must be a list of names, got the string {terms!r}")
    dup = sorted({t for t in terms if list(terms).count(t) > 1})
    if dup:
        raise ValueError(f"loss terms listed twice: {dup}")
    built = {name: _TERMS.get(name)(config) for name in terms}
    return Objective(policy, _POLICIES.get(policy)(config), built)


@register_policy_loss("ppo_clip")
def _ppo_clip(config: Any) -> Any:
    from creditgym.trainers.loss import PPOClip

    return PPOClip(config.clip_low, config.clip_high, getattr(config, "tis_cap", 2.0))


@register_term("kl")
def _kl(config: Any) -> Any:
    from creditgym.trainers.loss import KLTerm

    return KLTerm(config.kl_coef, config.kl_type)


@register_term("entropy")
def _entropy(config: Any) -> Any:
    from creditgym.trainers.loss import EntropyTerm

    return EntropyTerm(config.entropy_coef)
