"""Benchmark recipes: what one method name in `scripts/benchmark_credit.py` runs.

A method of the credit benchmark is more than a credit module: tree methods need a rollout
strategy that branches, curricula a task sampler, replay methods a buffer that rewrites groups,
Single-stream PO a tracker that keeps values across iterations. A `Recipe` names each piece:

- ``credit`` + ``credit_options``: the credit module (`creditgym.credit.make`);
- ``strategy`` + ``strategy_options``: the rollout strategy (`creditgym.trainers.strategies`,
  default ``lockstep``);
- ``sampler`` + ``sampler_options``: a task sampler (`creditgym.trainers.samplers`; None: the
  benchmark's own seeded task choice, identical for every method);
- ``buffer`` / ``tracker`` + options: plug-ins built by ``creditgym.trainers.buffers.make`` and
  ``creditgym.trainers.trackers.make`` (None by default);
- ``cost``: the generated turns (policy decisions) one iteration's rollout cost (default: the
  batch's ``stats["generated"]`` when the strategy reports it, else its recorded steps).

`register_recipe(name, credit=..., ...)` adds one; `resolve(name)` returns the registered recipe
or, for a plain credit module name, ``Recipe(name, credit=name)``, so every module keeps working
by its own name. The per-iteration hook calls the benchmark makes are in `HOOK_ORDER`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from creditgym.trainers.registry import Registry

__all__ = [
    "HOOK_ORDER",
    "Recipe",
    "available",
    "build_plugin",
    "default_cost",
    "register_recipe",
    "resolve",
]

#: What the benchmark calls in one iteration, in this order (each hook only if the object
#: defines it; ``ctx`` is a `creditgym.trainers.recipes.IterationContext`):
HOOK_ORDER = (
    "sampler.next(B) -> task indices          (when the recipe names a sampler)",
    "strategy.collect(pool, agent, tasks, G, seeds) -> RolloutBatch",
    "sampler.observe(tasks, batch)",
    "buffer.before_credit(groups, ctx) -> groups   (may rewrite groups; None keeps them)",
    "tracker.before_credit(groups, ctx) -> groups  (may annotate groups; None keeps them)",
    "module(groups) -> Advantages",
    "sampler/buffer/tracker.after_credit(groups, adv, ctx)",
    "agent.update(groups, adv)",
    "sampler/buffer/tracker.after_update(groups, adv, ctx)",
)


def default_cost(batch: Any) -> int:
    """Generated turns of a `RolloutBatch`: ``stats["generated"]`` if the strategy reports it
    (tree or retry strategies count every continuation), else the recorded steps plus those of
    dropped trajectories."""
    stats = batch.stats
    if "generated" in stats:
        return int(stats["generated"])
    dropped = sum(len(t.steps) for t in getattr(batch, "dropped", ()))
    return int(stats.get("steps", 0)) + dropped


@dataclass(frozen=True)
class Recipe:
    """One benchmark method: credit module, rollout strategy, task sampler and plug-ins."""

    name: str
    credit: str
    credit_options: Mapping[str, Any] = field(default_factory=dict)
    strategy: str = "lockstep"
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    buffer: str | None = None
    buffer_options: Mapping[str, Any] = field(default_factory=dict)
    tracker: str | None = None
    tracker_options: Mapping[str, Any] = field(default_factory=dict)
    cost: Callable[[Any], int] = default_cost
    description: str = ""

    @property
    def is_plain(self) -> bool:
        """A bare credit module with the benchmark's defaults for everything else."""
        return (
            self.strategy == "lockstep"
            and not self.strategy_options
            and self.sampler is None
            and self.buffer is None
            and self.tracker is None
        )

    def needs_branching(self) -> bool:
        """Whether the strategy or the credit module restores envs to intermediate states."""
        from creditgym import credit
        from creditgym.trainers import strategies

        cls = strategies.strategy_class(self.strategy)
        module_cls = credit.base._REGISTRY.get(self.credit)
        needs = getattr(module_cls, "needs", frozenset()) if module_cls else frozenset()
        return bool(getattr(cls, "needs_branching", False)) or "branching" in needs


_RECIPES: Registry[Recipe] = Registry("benchmark recipe")

#: Registered recipe names (plain credit module names resolve too, see `resolve`).
available = _RECIPES.available


def register_recipe(name: str, *, credit: str, **fields: Any) -> Recipe:
    """Register the benchmark method `name` (a `Recipe`'s fields as keywords) and return it."""
    recipe = Recipe(name=name, credit=credit, **fields)
    _RECIPES.register(name)(recipe)
    return recipe


#: Resolvers of composed names ("a+b"), registered by `creditgym.trainers.plugins` on import
#: (a registration instead of an import here keeps the module graph free of cycles).
_COMPOSERS: list[Callable[[str], Recipe]] = []


def resolve(name: str) -> Recipe:
    """The recipe a benchmark method name runs: a registered recipe, else the credit module of
    that name with the benchmark's defaults. An unknown name lists both kinds."""
    from creditgym import credit

    if name in _RECIPES.available():
        return _RECIPES.get(name)
    if "+" in name:  # a composition, e.g. "gigpo+arpo" (issue 19, creditgym.trainers.plugins)
        if not _COMPOSERS:
            raise ValueError(
                f"{name!r} composes recipes: import creditgym.trainers.plugins first (it "
                "registers the composer)"
            )
        return _COMPOSERS[-1](name)
    if name in credit.available():
        return Recipe(name=name, credit=name)
    raise ValueError(
        f"unknown benchmark method {name!r}; credit modules: {credit.available()}, "
        f"recipes: {available()}"
    )


def build_plugin(kind: str, name: str, options: Mapping[str, Any]) -> Any:
    """A buffer or tracker by name from its registry module (``creditgym.trainers.buffers`` /
    ``creditgym.trainers.trackers``, each with ``make(name, **options)``)."""
    modules = {"buffer": "creditgym.trainers.buffers", "tracker": "creditgym.trainers.trackers"}
    if kind not in modules:
        raise ValueError(f"unknown plug-in kind {kind!r}; known: {sorted(modules)}")
    try:
        module = importlib.import_module(modules[kind])
    except ModuleNotFoundError as exc:
        raise ValueError(f"{kind} {name!r}: {modules[kind]} is not available ({exc})") from None
    return module.make(name, **dict(options))


@dataclass
class IterationContext:
    """What a hook sees of the benchmark run: iteration, seed, tasks, agent and env pool."""

    iteration: int
    seed: int
    tasks: list[int]
    agent: Any
    pool: Any
    extra: dict[str, Any] = field(default_factory=dict)


__all__ += ["IterationContext"]


# issue 19: methods with a tracker, a buffer or a curriculum (creditgym.trainers.trackers,
# .buffers, .curricula); stratified_grpo runs by its module name.
register_recipe(
    "sspo",
    credit="sspo",
    tracker="sspo_value",
    sampler="sspo_priority",
    description="Single-stream PO: per-task value tracker, global normalisation, prioritised tasks",
)
register_recipe(
    "arpo",
    credit="grpo",
    buffer="arpo_replay",
    buffer_options={"rule": "all_lost"},
    description="ARPO: GRPO with per-task replay of successes into all-failing groups",
)
register_recipe(
    "dump",
    credit="grpo",
    sampler="dump",
    description="DUMP: GRPO with a UCB curriculum over task types (learnability = mean |A|)",
)


# issue 18: the branching methods (trainers/strategies_branching.py).
register_recipe(
    "spo_chain",
    credit="spo_chain",
    strategy="mc_chain",
    strategy_options={"n_mc": 4, "cutpoint": "turn"},
    description="SPO-chain: MC values at every turn boundary (4 continuations), segment advantages",
)
register_recipe(
    "spo_tree",
    credit="spo_tree",
    strategy="tree",
    strategy_options={"mode": "spo", "branching": (6, 6, 6), "segment_turns": 1},
    description="SPO-tree: 6-6-6 tree of 1-turn nodes, edge advantages V(n) - V(parent), edge buffer",
)
register_recipe(
    "tree_grpo",
    credit="tree_grpo",
    strategy="tree",
    strategy_options={"mode": "tree_grpo", "m": 2, "n": 2, "l": 1, "k": 3},
    description="Tree-GRPO: M=2 trees, L=1 expansion of N=2 nodes, K=3 leaves; intra + inter GRPO",
)
register_recipe(
    "r3l",
    credit="r3l",
    strategy="retry",
    strategy_options={"reflector": "expert"},
    description="R^3L: G/2 bases, expert-guided retry from the first non-expert step, alpha = 3",
)
register_recipe(
    "spo_chain_int5",
    credit="spo_chain",
    strategy="mc_chain",
    strategy_options={"n_mc": 4, "cutpoint": "turn", "cutpoint_interval": 5},
    description="SPO-chain with a boundary every 5th turn (the reference's headline 'int5')",
)
