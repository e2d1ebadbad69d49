"""The credit benchmark's settings (`scripts/benchmark_credit.py`), loaded like a training config.

    python scripts/benchmark_credit.py --config my_bench.yaml seeds=5 env_kwargs.level=medium

`BenchmarkConfig` is read with the one loader (`creditgym.trainers.config.load`: a YAML file plus
dotted ``key=value`` overrides, unknown keys named with their nearest valid ones). The script's
flags are sugar for those overrides: ``--seeds 5`` is ``seeds=5`` and ``--env-kwargs '{...}'`` is
``env_kwargs={...}``, so every default lives here once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from creditgym.trainers.config import _Section

__all__ = [
    "ADV_SCALES",
    "BENCH_AGENTS",
    "BENCH_NEEDS",
    "REFERENCES",
    "TABULAR_DEFAULTS",
    "BenchmarkConfig",
]

#: Tabular policies the benchmark trains.
BENCH_AGENTS = ("tabular", "hier_tabular")
#: How each batch's advantages are scaled before the policy-gradient step.
ADV_SCALES = ("rms", "none")
#: Module needs the benchmark itself provides (branching envs, a recipe's tracker); any other
#: need (values, entropies, answer log-probs) comes from an LLM.
BENCH_NEEDS = frozenset({"branching", "task_baseline"})
#: Fidelity references (see ``BenchmarkConfig.reference``).
REFERENCES = ("auto", "exact", "mc")

#: Options a tabular run gives modules whose defaults read model outputs (explicit
#: ``method_options`` win): HiPER has no value heads here, so it runs critic-free, bootstrapping
#: segment ends with the trajectory's own return (with the group mean there, short segments
#: cut the outcome off the action advantages: 0.15 vs 0.8+ success on KeyRooms medium).
TABULAR_DEFAULTS: dict[str, dict[str, Any]] = {
    "hiper": {"values": "group", "group_bootstrap": "return"}
}


class BenchmarkConfig(_Section):
    """One credit benchmark: every (method, seed) run trains a fresh tabular policy on the same
    tasks and reset seeds."""

    env: str = "creditgym/KeyRooms-v0"
    """Registered env id; fidelity and the prior policy need one with a finite ``model()``."""
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for ``gymnasium.make`` (e.g. ``{"level": "small"}``)."""
    agent: Literal[BENCH_AGENTS] = "tabular"  # type: ignore[valid-type]
    """"tabular": flat softmax policy (hierarchical for modules with span advantages, i.e.
    hiper); "hier_tabular": the hierarchical switch/subgoal/action policy for all."""
    methods: list[str] = Field(default_factory=lambda: ["grpo", "rloo", "gigpo"])
    """Methods to compare: credit modules (`creditgym.credit.available()`) or benchmark recipes
    (`creditgym.trainers.recipes.available()`); a comma string is split."""
    method_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Options per method, e.g. ``{"gigpo": {"mode": "mean_norm"}}`` (over `TABULAR_DEFAULTS`)."""
    seeds: int = Field(5, ge=1)
    """Seeds per method (seed s picks the same tasks for every method)."""
    iterations: int = Field(40, ge=1)
    """Policy-gradient iterations per run."""
    method_iterations: dict[str, int] = Field(default_factory=dict)
    """Iterations for some methods instead of ``iterations``, e.g. ``{"spo_tree": 1}``: a method
    whose iteration generates many more turns than the others' (MC continuations, trees) then
    reaches a comparable budget, and 'success @ turns' compares them all at equal turns."""
    groups: int = Field(8, ge=1)
    """B: tasks per iteration."""
    group_size: int = Field(8, ge=1)
    """G: episodes per task."""
    tasks: int = Field(8, ge=1)
    """Size of the train-panel subset (its first task ids)."""
    lr: float = Field(3.0, gt=0)
    """Step size of the tabular policy's update."""
    gamma: float = Field(0.95, gt=0, le=1)
    """Discount of the exact values (fidelity and the prior policy)."""
    adv_scale: Literal[ADV_SCALES] = "rms"  # type: ignore[valid-type]
    """"rms": divide each batch's advantages by their RMS before the update, so methods differ
    only in how they distribute credit, not in step size; "none": use them as they are."""
    prior_success: float = Field(0.2, ge=0, lt=1)
    """Start every method from softmax(beta * A*(s, a)) whose exact success probability within
    the step limit is this (beta found by bisection); without a model, from the expert prior
    (see ``prior_episodes``); 0: the uniform policy."""
    prior_beta: float | None = Field(None, ge=0)
    """Fix beta instead of calibrating it."""
    prior_episodes: int = Field(16, ge=1)
    """Envs without ``model()``: the start policy puts logit beta on the expert's action in each
    state (`creditgym.agents.expert_prior`); beta is bisected until rollouts of this many seeded
    episodes per task win with ``prior_success``."""
    reference: Literal[REFERENCES] = "auto"  # type: ignore[valid-type]
    """Reference advantages for fidelity: "exact" (A^pi from the env's finite model), "mc"
    (Monte-Carlo A^pi from env branching, `creditgym.trainers.reference`; with a model the exact
    one is computed too and their agreement recorded), "auto": exact if the env has a model."""
    mc_k: int = Field(8, ge=2)
    """MC reference: continuations per Q^pi(s, a) and per V^pi(s) estimate."""
    mc_states: int = Field(16, ge=1)
    """MC reference: (group, state) units sampled per evaluated iteration (by visit count)."""
    mc_actions: int = Field(4, ge=1)
    """MC reference: at most this many distinct actions (the most taken) per sampled state."""
    eval_every: int = Field(2, ge=1)
    """Evaluate the policy every k iterations (and after the last)."""
    eval_episodes: int = Field(4, ge=1)
    """Sampled evaluation episodes per task of the subset."""
    fidelity_every: int = Field(5, ge=0)
    """Compare the step advantages with the reference A^pi every k iterations (0: never)."""
    dump_iterations: list[int] = Field(default_factory=lambda: [0, 10, 20])
    """Iterations whose steps are written per method and seed to OUT/trajectories/, with the
    exact A^pi of the acting policy, for scripts/view.py ("0,10,20" or "none" as a string)."""
    workers: int | None = Field(None, ge=1)
    """Worker processes (None: min(2, CPU count))."""
    out: str = "runs/benchmark_credit"
    """Output folder: summary.json, summary.md, curves.png, runs.jsonl."""

    @field_validator("methods", mode="before")
    @classmethod
    def _split_methods(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("dump_iterations", mode="before")
    @classmethod
    def _parse_iterations(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, int):
            return [value]
        if isinstance(value, str):
            from creditgym.trainers.viewer.bench import parse_iterations

            return parse_iterations(value)
        return value

    @field_validator("dump_iterations")
    @classmethod
    def _check_iterations(cls, value: list[int]) -> list[int]:
        if any(k < 0 for k in value):
            raise ValueError(f"iterations must be >= 0, got {value}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _check_methods(self) -> BenchmarkConfig:
        from creditgym import credit
        from creditgym.trainers import plugins, recipes, strategies  # noqa: F401  (plugins: "a+b")

        if not self.methods:
            raise ValueError("methods is empty")
        unknown = sorted(set(self.method_iterations) - set(self.methods))
        if unknown:
            raise ValueError(f"method_iterations names methods not benchmarked: {unknown}")
        bad = {m: n for m, n in self.method_iterations.items() if not int(n) >= 1}
        if bad:
            raise ValueError(f"method_iterations must be >= 1, got {bad}")
        for m in self.methods:
            recipe = recipes.resolve(m)  # unknown names list modules and recipes
            try:
                module = credit.make(recipe.credit, **self.options_for(m))  # unknown options
            except KeyError as exc:
                raise ValueError(exc.args[0]) from None
            except TypeError as exc:
                raise ValueError(str(exc)) from None
            strategies.strategy_class(recipe.strategy)  # unknown strategies
            llm_needs = set(module.needs) - BENCH_NEEDS
            if llm_needs:
                raise ValueError(
                    f"{m} needs {sorted(llm_needs)} from an LLM; use the LLM benchmark"
                )
            if "task_baseline" in module.needs and recipe.tracker is None:
                raise ValueError(f"{m} needs a task_baseline: its recipe must name a tracker")
        return self

    def iterations_for(self, method: str) -> int:
        """The iterations `method` runs: ``method_iterations[method]``, else ``iterations``."""
        return int(self.method_iterations.get(method, self.iterations))

    def recipe(self, method: str) -> Any:
        """The `creditgym.trainers.recipes.Recipe` that `method` runs."""
        from creditgym.trainers import recipes

        return recipes.resolve(method)

    def options_for(self, method: str) -> dict[str, Any]:
        """The credit options `method` runs with: `TABULAR_DEFAULTS` of its credit module, the
        recipe's ``credit_options``, then ``method_options[method]``."""
        recipe = self.recipe(method)
        return {
            **TABULAR_DEFAULTS.get(recipe.credit, {}),
            **dict(recipe.credit_options),
            **self.method_options.get(method, {}),
        }

    def resolved(self) -> BenchmarkConfig:
        """This config as the runs see it (and the summary records it): ``method_options``
        holds each method's full options, ``dump_iterations`` only those the run reaches."""
        options = {m: self.options_for(m) for m in self.methods if self.options_for(m)}
        extra = {m: o for m, o in self.method_options.items() if m not in options}
        longest = max(self.iterations_for(m) for m in self.methods)
        return self.model_copy(
            update={
                "method_options": {**options, **extra},
                "dump_iterations": [k for k in self.dump_iterations if k < longest],
            }
        )
