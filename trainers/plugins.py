"""How the trainer and the benchmark hold the plug-ins of one run: tracker, buffer, curricula,
loss-term state, and the config-time check of which combinations can work.

`check_combination` refuses, at config time: a credit module that needs a per-task baseline
("task_baseline") without a tracker that provides it; a group-based buffer (``arpo_replay``)
with a groupless credit module (``sspo``, ``groupless = True`` below); and, in a composition of
benchmark recipes (`compose`, e.g. ``"sspo+dump"``), two task samplers, two trackers or two
buffers. `TrainerPlugins` calls the hooks in the order of `creditgym.trainers.recipes.HOOK_ORDER`
and gathers every plug-in's state for the checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from creditgym.trainers import recipes as _recipes
from creditgym.trainers.recipes import IterationContext, Recipe

__all__ = [
    "GROUPLESS",
    "TRAINER_NEEDS",
    "TrainerPlugins",
    "build_for_trainer",
    "check_combination",
    "compose",
]

#: Credit modules that do not compare trajectories inside a group.
GROUPLESS = frozenset({"sspo"})
#: Credit-module needs the trainer serves itself (not the learner).
TRAINER_NEEDS = frozenset({"task_baseline", "branching"})


def check_combination(
    credit_name: str,
    credit_options: Mapping[str, Any] | None = None,
    sampler: str | None = None,
    tracker: str | None = None,
    buffer: str | None = None,
    tracker_options: Mapping[str, Any] | None = None,
    buffer_options: Mapping[str, Any] | None = None,
) -> None:
    """Raise a ValueError naming the parts when the combination cannot work (module docstring);
    also builds the tracker and buffer once, so bad options fail here."""
    from creditgym import credit
    from creditgym.trainers import buffers, trackers

    module = credit.make(credit_name, **dict(credit_options or {}))
    provided: set[str] = set()
    try:  # bad options are config errors (ValueError), like unknown names
        if tracker is not None:
            trackers.make(tracker, **dict(tracker_options or {}))
        if buffer is not None:
            buffers.make(buffer, **dict(buffer_options or {}))
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    if tracker is not None:
        provided |= set(trackers.tracker_class(tracker).provides)
    group_buffer = buffer is not None and buffers.buffer_class(buffer).group_based
    if group_buffer and credit_name in GROUPLESS:
        raise ValueError(
            f"buffer {buffer!r} rewrites groups, but credit module {credit_name!r} is "
            "groupless (one sample per task, no group to rewrite): drop the buffer or use a "
            "group-based module (grpo, gigpo, ...)"
        )
    missing = ("task_baseline" in module.needs) and "task_baseline" not in provided
    if missing:
        names = [
            n for n in trackers.available() if "task_baseline" in trackers.tracker_class(n).provides
        ]
        raise ValueError(
            f"credit module {credit_name!r} needs a per-task baseline from a tracker: set "
            f"tracker.name to one that provides 'task_baseline' ({names})"
        )


def compose(name: str) -> Recipe:
    """The benchmark recipe of ``"a+b+..."``: credit module (and its options) from the first
    part, sampler, tracker and buffer from whichever part names one. Two parts naming the same
    kind of piece is an error (e.g. ``"sspo+dump"``: samplers sspo_priority and dump)."""
    from creditgym.trainers import recipes

    parts = [recipes.resolve(p.strip()) for p in name.split("+") if p.strip()]
    if len(parts) < 2:
        raise ValueError(f"a composition needs two or more methods joined by '+', got {name!r}")
    fields: dict[str, Any] = {}
    for kind in ("sampler", "tracker", "buffer"):
        named = [(p.name, getattr(p, kind)) for p in parts if getattr(p, kind) is not None]
        if len(named) > 1:
            raise ValueError(
                f"{name!r} combines two {kind}s: "
                + ", ".join(f"{v!r} (from {n!r})" for n, v in named)
                + f"; a run has one {kind}"
            )
        if named:
            src = next(p for p in parts if getattr(p, kind) is not None)
            fields[kind] = getattr(src, kind)
            fields[f"{kind}_options"] = getattr(src, f"{kind}_options")
    first = parts[0]
    strategies = {p.strategy for p in parts if p.strategy != "lockstep"}
    if len(strategies) > 1:
        raise ValueError(f"{name!r} combines rollout strategies {sorted(strategies)}")
    recipe = dataclasses.replace(
        first,
        name=name,
        **fields,
        strategy=next(iter(strategies), first.strategy),
        description=" + ".join(p.name for p in parts),
    )
    check_combination(
        recipe.credit, recipe.credit_options, recipe.sampler, recipe.tracker, recipe.buffer,
        recipe.tracker_options, recipe.buffer_options,
    )  # fmt: skip
    return recipe


_recipes._COMPOSERS.append(compose)  # recipes.resolve("a+b") without importing us


class TrainerPlugins:
    """The trainer's sampler, tracker, buffer and stateful loss terms, and their hooks."""

    def __init__(self, trainer: Any, tracker: Any, buffer: Any, terms: Mapping[str, Any]):
        self.trainer = trainer
        self.tracker = tracker
        self.buffer = buffer
        self.terms = dict(terms)

    def _ctx(self, metrics: Mapping[str, Any]) -> IterationContext:
        t = self.trainer
        return IterationContext(
            iteration=int(metrics.get("_iteration", 0)),
            seed=int(t.config.seed),
            tasks=list(metrics.get("rollout/tasks", [])),
            agent=t.agent,
            pool=getattr(t, "pool", None),
        )

    def _objects(self) -> list[Any]:
        return [
            o
            for o in (getattr(self.trainer, "sampler", None), self.buffer, self.tracker)
            if o is not None
        ]

    def learner_needs(self, module: Any) -> set[str]:
        """What the learner's prepare pass must fill: the module's needs less those the trainer
        serves, plus token entropies when a stateful term (EPO) reads their history."""
        needs = set(module.needs) - TRAINER_NEEDS
        if any(getattr(t, "needs_old_entropy", False) for t in self.terms.values()):
            needs.add("entropies")
        return needs

    def before_credit(self, groups: list, metrics: dict[str, Any]) -> list:
        ctx = self._ctx(metrics)
        for obj in (self.buffer, self.tracker):
            if obj is not None:
                groups = obj.before_credit(groups, ctx) or groups
        if "replayed" in ctx.extra:
            metrics["buffer/replayed"] = float(ctx.extra["replayed"])
        return groups

    def after_credit(self, groups: list, adv: Any, metrics: dict[str, Any]) -> None:
        ctx = self._ctx(metrics)
        for obj in self._objects():
            fn = getattr(obj, "after_credit", None)
            if fn is not None:
                fn(groups, adv, ctx)

    def after_update(self, groups: list, adv: Any, metrics: dict[str, Any]) -> None:
        ctx = self._ctx(metrics)
        for obj in self._objects():
            fn = getattr(obj, "after_update", None)
            if fn is not None:
                fn(groups, adv, ctx)
        for name, term in self.terms.items():
            value = term.end_iteration(groups)
            if value is not None:
                metrics[f"train/{name}_history_entropy"] = value
            for key, v in getattr(term, "last", {}).items():
                metrics[f"train/{name}_{key}"] = v

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.tracker is not None:
            out["tracker"] = self.tracker.state_dict()
        if self.buffer is not None:
            out["buffer"] = self.buffer.state_dict()
        out["terms"] = {n: t.state_dict() for n, t in self.terms.items()}
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for kind in ("tracker", "buffer"):
            obj = getattr(self, kind)
            if obj is not None:
                if kind not in state:
                    raise ValueError(
                        f"the checkpoint holds no {kind} state, this run has {obj.name!r}"
                    )
                obj.load_state_dict(state[kind])
        for name, term in self.terms.items():
            if name in state.get("terms", {}):
                term.load_state_dict(state["terms"][name])


def build_for_trainer(trainer: Any, cfg: Any) -> TrainerPlugins:
    """Build the run's tracker and buffer, bind task types to a curriculum sampler, configure
    the learner's stateful loss terms (``loss.term_options`` plus the planned iterations)."""
    from creditgym.trainers import buffers, trackers

    tracker = trackers.make(cfg.tracker.name, **cfg.tracker.options) if cfg.tracker.name else None
    buffer = (
        buffers.make(cfg.buffer.name, **{"seed": cfg.seed, **cfg.buffer.options})
        if cfg.buffer.name
        else None
    )
    sampler = trainer.sampler
    if hasattr(sampler, "bind_task_types") and getattr(sampler, "task_types", None) is None:
        from creditgym.trainers.curricula import panel_task_types

        sampler.bind_task_types(
            panel_task_types(cfg.env.id, "train", dict(cfg.env.kwargs), range(sampler.num_tasks))
        )
    terms = {}
    objective = getattr(getattr(trainer, "learner", None), "objective", None)
    for name, term in (getattr(objective, "terms", None) or {}).items():
        if hasattr(term, "configure"):
            term.configure(
                **{"total_iterations": cfg.train.iterations, **cfg.loss.term_options.get(name, {})}
            )
        if hasattr(term, "state_dict"):
            terms[name] = term
    return TrainerPlugins(trainer, tracker, buffer, terms)
