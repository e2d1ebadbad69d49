"""Benchmark credit-assignment methods with a tabular agent on identical tasks and seeds.

    python scripts/benchmark_credit.py --env creditgym/KeyRooms-v0 --env-kwargs '{"level":"medium"}' \
        --agent tabular --methods grpo,rloo,gigpo --seeds 5 --out runs/bench-medium

Every (method, seed) run trains a fresh tabular softmax policy on the same fixed subset of the
train panel (the first --tasks task ids; its hash is reported), picking the same B tasks and reset
seeds at every iteration for every method. Per iteration: collect B x G episodes, compute the
method's advantages, take one policy-gradient step. Every --eval-every iterations the policy is
evaluated (sampling, --eval-episodes per task on the whole subset) and, every --fidelity-every
iterations, the method's step advantages are compared with the exact A^pi(s, a) of the current
policy (Pearson correlation pooled over the batch's steps; the env must expose `model()`).

Writes DIR/summary.json, DIR/summary.md, DIR/curves.png and DIR/runs.jsonl (raw curves).

``--merge DIR,DIR --out DIR`` combines folders made with the same settings (a method benchmarked
later next to the first ones) into one summary, without running anything; equal turns are then
re-taken over every run.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from creditgym import (
    credit,
    envs,  # noqa: F401  (registers the creditgym envs)
)
from creditgym.agents import TabularSoftmaxAgent
from creditgym.agents.expert_prior import ExpertPriorHierTabularAgent, ExpertPriorTabularAgent
from creditgym.agents.hier_tabular import HierTabularAgent
from creditgym.envs.base import Panel
from creditgym.envs.branching import require_branching
from creditgym.trainers import recipes, samplers, strategies
from creditgym.trainers.bench_config import BenchmarkConfig
from creditgym.trainers.config import ConfigError, load, parse_overrides
from creditgym.trainers.reference import (
    fidelity_scores,
    mc_reference,
    pairwise_order,
    pearson,
    trained_steps,
)
from creditgym.trainers.rollout import EnvPool, collect
from creditgym.trainers.viewer.bench import write_benchmark_dump


# ----------------------------------------------------------------------------- exact values
class ExactValues:
    """Exact A^pi(s, a) of a tabular policy on each task's full transition model."""

    def __init__(self, pool: EnvPool, tasks: list[int], gamma: float):
        self.gamma = gamma
        self.models = {}
        if not pool.description.has_model:
            raise TypeError(f"{pool.env_id} does not expose model(); fidelity needs it")
        # a local env of the pool's id, split and kwargs, only to read each task's model
        env = gymnasium.make(pool.env_id, split=pool.split, **pool.env_kwargs).unwrapped
        for task in tasks:
            env.reset(seed=0, options={"task_id": task})
            model = env.model()
            uniform = [np.full(len(a), 1.0 / len(a)) if a else np.zeros(0) for a in model.actions]
            action_index = [{a: i for i, a in enumerate(acts)} for acts in model.actions]
            self.models[task] = (model, uniform, action_index)
        env.close()

    def _optimal_advantages(self, model) -> np.ndarray:
        """A*(s, a) = Q*(s, a) - V*(s) in the model's flat transition layout (cached)."""
        if not hasattr(model, "_bench_a_star"):
            v_star = model.optimal_values(self.gamma)
            q_flat = model.flat_reward + self.gamma * np.where(
                model.terminal[model.flat_next], 0.0, v_star[model.flat_next]
            )
            model._bench_a_star = q_flat - v_star[model.flat_state]
        return model._bench_a_star

    def _prior_policy(self, model, beta: float) -> np.ndarray:
        """Flat softmax(beta * A*) per state (A* <= 0 and the best action has 0: no overflow)."""
        z = np.exp(beta * self._optimal_advantages(model))
        return (
            z / np.bincount(model.flat_state, weights=z, minlength=model.n_states)[model.flat_state]
        )

    def success_probability(self, beta: float, horizon: int) -> float:
        """Exact mean probability over the tasks of winning within `horizon` steps under the
        prior softmax(beta * A*) policy (finite-horizon dynamic programming)."""
        probs = []
        for model, _u, _i in self.models.values():
            pi = self._prior_policy(model, beta)
            wins = model.flat_reward > 0
            p = np.zeros(model.n_states)
            for _ in range(horizon):
                contrib = pi * np.where(wins, 1.0, p[model.flat_next])
                p = np.bincount(model.flat_state, weights=contrib, minlength=model.n_states)
            probs.append(p[model.initial])
        return float(np.mean(probs))

    def calibrate(self, target: float, horizon: int) -> float:
        """Smallest beta (bisection) whose prior policy wins within the horizon with the target
        probability on average over the tasks."""
        lo, hi = 0.0, 1.0
        while self.success_probability(hi, horizon) < target and hi < 1e3:
            lo, hi = hi, hi * 2
        for _ in range(20):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.success_probability(mid, horizon) < target else (lo, mid)
        return hi

    def warm_start(self, agent: TabularSoftmaxAgent, beta: float) -> None:
        """Initial logits beta * A*(s, a), the optimal advantages of each task's model.

        beta = 0 is the uniform policy. A positive beta gives every method the same partly
        competent starting policy, like a pretrained LLM agent, instead of a random walk that
        never reaches the reward on long tasks.
        """
        for model, _uniform, _index in self.models.values():
            logits = beta * self._optimal_advantages(model)
            for s, key in enumerate(model.states):
                lo, hi = model.offsets[s], model.offsets[s + 1]
                if hi > lo:
                    agent.table[key] = (list(model.actions[s]), logits[lo:hi].copy())

    def advantages(self, agent: TabularSoftmaxAgent, task: int) -> tuple[Any, list]:
        model, uniform, action_index = self.models[task]
        policy = list(uniform)
        for key in agent.table.keys() & model.index.keys():
            s = model.index[key]
            if len(model.actions[s]):
                policy[s] = agent.probs(key, model.actions[s])
        result = model.evaluate(policy, gamma=self.gamma)
        adv = result["A"] if isinstance(result, dict) else getattr(result, "A", None)
        if adv is None:
            adv = result[2]
        return model, adv, action_index

    def step_advantages(self, agent, batch_groups, task_of_group) -> np.ndarray:
        """Exact A^pi(s, a) of the agent's current policy for every step (NaN off the model)."""
        exact_by_task = {t: self.advantages(agent, t) for t in set(task_of_group)}
        out = []
        for g, task in zip(batch_groups, task_of_group):
            model, adv, action_index = exact_by_task[task]
            for traj in g.trajectories:
                for step in traj.steps:
                    s = model.index.get(step.state_key)
                    a = action_index[s].get(step.action) if s is not None else None
                    out.append(np.nan if a is None else float(adv[s][a]))
        return np.array(out, dtype=np.float64)

    @staticmethod
    def fidelity(exact: np.ndarray, values: np.ndarray) -> float | None:
        """Pearson correlation of a method's advantages with `step_advantages` (steps on the
        model only); None when fewer than 3 such steps or either side is constant."""
        on_model = ~np.isnan(exact)
        xs, ys = np.asarray(values, dtype=np.float64)[on_model], exact[on_model]
        if len(xs) < 3 or np.std(xs) < 1e-12 or np.std(ys) < 1e-12:
            return None
        return float(np.corrcoef(xs, ys)[0, 1])


# ----------------------------------------------------------------------------- one run
def _hook(objects, name: str, *args) -> Any:
    """Call ``name(*args)`` on each plug-in that defines it; the last non-None result."""
    result = None
    for obj in objects:
        fn = getattr(obj, name, None) if obj is not None else None
        if fn is not None:
            out = fn(*args)
            result = out if out is not None else result
    return result


def _plugin(kind: str, name: str | None, options) -> Any:
    return recipes.build_plugin(kind, name, options) if name is not None else None


def use_mc(cfg: BenchmarkConfig, has_model: bool) -> bool:
    """Whether fidelity is measured against the Monte-Carlo reference."""
    if cfg.reference == "exact" and not has_model:
        raise SystemExit(f"{cfg.env} has no model(): use reference=mc (or auto)")
    return cfg.reference == "mc" or (cfg.reference == "auto" and not has_model)


def expert_prior_success(cfg: BenchmarkConfig, pool: EnvPool, tasks: list[int], beta: float):
    """Success of the expert-prior start policy (fresh agent, seed 0) over ``prior_episodes``
    seeded episodes per task (reset seeds 20_000 + task, apart from training and evaluation)."""
    agent = ExpertPriorTabularAgent(beta, lr=cfg.lr, seed=0)
    seeds = [20_000 + t for t in tasks]
    return collect(pool, agent, tasks, cfg.prior_episodes, seeds).stats["success"]


def calibrate_expert_prior(cfg: BenchmarkConfig, pool: EnvPool, tasks: list[int]) -> dict:
    """Smallest beta (bisection, 12 halvings after doubling from 1) whose measured expert-prior
    success reaches ``prior_success``; the rollouts are seeded, so the result is reproducible."""
    target = cfg.prior_success
    lo, hi = 0.0, 1.0
    while expert_prior_success(cfg, pool, tasks, hi) < target and hi < 64:
        lo, hi = hi, hi * 2
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        if expert_prior_success(cfg, pool, tasks, mid) < target:
            lo = mid
        else:
            hi = mid
    return {
        "beta": hi,
        "success": expert_prior_success(cfg, pool, tasks, hi),
        "episodes": cfg.prior_episodes * len(tasks),
    }


def _start_policy(cfg, pool, tasks, hierarchical, seed):
    """The agent every method starts from, its beta, its success and the exact values (or
    None): softmax(beta A*) with a model, the expert prior without one."""
    horizon = pool.description.max_steps
    beta = cfg.prior_beta
    if pool.description.has_model:
        agent = (HierTabularAgent if hierarchical else TabularSoftmaxAgent)(lr=cfg.lr, seed=seed)
        exact = ExactValues(pool, tasks, cfg.gamma)
        if beta is None:
            beta = exact.calibrate(cfg.prior_success, horizon) if cfg.prior_success > 0 else 0.0
        if beta > 0:
            exact.warm_start(agent, beta)
        return agent, beta, exact.success_probability(beta, horizon), exact
    if beta is None:
        beta = calibrate_expert_prior(cfg, pool, tasks)["beta"] if cfg.prior_success > 0 else 0.0
    cls = ExpertPriorHierTabularAgent if hierarchical else ExpertPriorTabularAgent
    return cls(beta, lr=cfg.lr, seed=seed), beta, float("nan"), None


def run_one(cfg: BenchmarkConfig, method: str, seed: int, progress=None) -> dict[str, Any]:
    recipe = recipes.resolve(method)
    module = credit.make(recipe.credit, **cfg.options_for(method))
    strategy = strategies.make(recipe.strategy, **dict(recipe.strategy_options))
    # A module with span advantages (HiPER) needs a policy that emits those spans.
    hierarchical = cfg.agent == "hier_tabular" or getattr(module, "span_names", None)
    task_rng = np.random.default_rng(seed)  # same task/seed schedule for every method
    pool = EnvPool(cfg.env, cfg.groups * cfg.group_size, split="train", env_kwargs=cfg.env_kwargs)
    n_tasks = min(cfg.tasks, len(pool.panel))
    panel_hash = Panel(
        pool.env_id, "train", pool.panel.version, tuple(pool.panel.ids[:n_tasks])
    ).hash
    tasks = list(range(n_tasks))
    sampler = (
        samplers.make(recipe.sampler, num_tasks=n_tasks, seed=seed, **dict(recipe.sampler_options))
        if recipe.sampler is not None
        else None
    )
    if sampler is not None and hasattr(sampler, "bind_task_types"):  # DUMP: task types
        from creditgym.trainers.curricula import panel_task_types

        sampler.bind_task_types(panel_task_types(cfg.env, "train", cfg.env_kwargs, tasks))
    buffer = _plugin("buffer", recipe.buffer, recipe.buffer_options)
    tracker = _plugin("tracker", recipe.tracker, recipe.tracker_options)
    plugins = (sampler, buffer, tracker)
    agent, beta, prior_success, exact = _start_policy(cfg, pool, tasks, hierarchical, seed)
    mc = use_mc(cfg, exact is not None)
    curve: dict[str, list] = {"eval_iter": [], "eval_success": [], "train_success": []}
    curve.update({"fid_iter": [], "fidelity": [], "eval_turns": [], "tasks": []})
    extra = ("fidelity_corrected", "reliability", "pairwise", "pairs", "mc_vs_exact")
    for key in (*extra, "fidelity_exact_sampled", "pairwise_exact_sampled"):
        curve[key] = []
    skipped, credit_ms, credit_steps, turns, mc_turns = 0, 0.0, 0, 0, 0.0
    kind = f"MC A^π (K = {cfg.mc_k}, γ = {cfg.gamma})" if mc else f"exact A^π (γ = {cfg.gamma})"

    def evaluate() -> float:
        seeds = [10_000 + t for t in tasks]
        batch = collect(pool, agent, tasks, cfg.eval_episodes, seeds)
        return batch.stats["success"]

    def mc_ref(groups, it):
        """MC A^pi of the acting policy; its own random streams, so training is unchanged."""
        saved = agent.rng
        agent.rng = np.random.default_rng([seed, it, 1])
        try:
            return mc_reference(
                pool, agent, groups, k=cfg.mc_k, n_states=cfg.mc_states,
                max_actions=cfg.mc_actions, gamma=cfg.gamma,
                rng=np.random.default_rng([seed, it, 2]),
            )  # fmt: skip
        finally:
            agent.rng = saved

    n_iter = cfg.iterations_for(method)
    for it in range(n_iter + 1):
        if it % cfg.eval_every == 0 or it == n_iter:
            curve["eval_iter"].append(it)
            curve["eval_success"].append(evaluate())
            curve["eval_turns"].append(turns)
        if it == n_iter:
            break
        if sampler is not None:
            chosen = [int(t) for t in sampler.next(cfg.groups)]
        else:
            replace = cfg.groups > n_tasks
            chosen = [int(t) for t in task_rng.choice(n_tasks, size=cfg.groups, replace=replace)]
        curve["tasks"].append(chosen)
        seeds = [seed * 100_000 + it * cfg.groups + b for b in range(cfg.groups)]
        batch = collect(pool, agent, chosen, cfg.group_size, seeds, strategy=strategy)
        turns += recipe.cost(batch)
        ctx = recipes.IterationContext(it, seed, chosen, agent, pool)
        if sampler is not None:
            sampler.observe(chosen, batch)
        groups = batch.groups
        for plugin in (buffer, tracker):
            groups = _hook([plugin], "before_credit", groups, ctx) or groups
        t0 = time.perf_counter()
        adv = module(groups)
        credit_ms += 1000 * (time.perf_counter() - t0)
        credit_steps += len(adv.values)
        _hook(plugins, "after_credit", groups, adv, ctx)
        curve["train_success"].append(batch.stats["success"])
        want_fid = cfg.fidelity_every > 0 and it % cfg.fidelity_every == 0
        want_ref = want_fid or it in cfg.dump_iterations
        # A^pi of the policy that acted (before the update), once for fidelity and the dump.
        exact_ref = (
            exact.step_advantages(agent, groups, chosen)
            if exact is not None and (want_ref and not mc or want_fid)
            else None
        )
        mc_result = mc_ref(groups, it) if mc and want_ref else None
        ref = mc_result.values if mc_result is not None else exact_ref
        if want_fid and ref is not None:
            halves = mc_result.halves if mc_result is not None else None
            # Scored on the steps the method trains on (masked steps carry no claim).
            trained = trained_steps(adv)
            scores = fidelity_scores(groups, adv.values, ref, halves, mask=trained)
            if scores["pearson"] is None:
                skipped += 1
            else:
                curve["fid_iter"].append(it)
                curve["fidelity"].append(scores["pearson"])
                curve["fidelity_corrected"].append(scores["pearson_corrected"])
                curve["reliability"].append(scores["reliability"])
                curve["pairwise"].append(scores["pairwise"])
                curve["pairs"].append(scores["pairs"])
                agree = (
                    pearson(mc_result.values, exact_ref)
                    if mc_result and exact_ref is not None
                    else None
                )
                curve["mc_vs_exact"].append(agree)
                # the exact-reference fidelity on the MC's sampled steps: what r corrected
                # should recover
                on = np.isfinite(ref) & trained
                curve["fidelity_exact_sampled"].append(
                    pearson(adv.values[on], exact_ref[on]) if agree is not None else None
                )
                curve["pairwise_exact_sampled"].append(
                    pairwise_order(groups, adv.values, np.where(on, exact_ref, np.nan))[0]
                    if agree is not None
                    else None
                )
        if mc_result is not None:
            mc_turns += mc_result.stats.get("generated", 0.0)
        if cfg.adv_scale == "rms":
            # Same step size for every method: only the direction of the credit differs.
            rms = float(np.sqrt(np.mean(adv.values**2))) if len(adv.values) else 0.0
            adv = credit.Advantages(values=adv.values / (rms + 1e-8), spans=adv.spans)
        if it in cfg.dump_iterations:
            write_benchmark_dump(cfg.out, method, seed, it, groups, adv, ref, kind)
        agent.update(groups, adv)
        _hook(plugins, "after_update", groups, adv, ctx)
        if progress is not None:
            progress.put(1)
    pool.close()
    reached = [i for i, s in zip(curve["eval_iter"], curve["eval_success"]) if s >= 0.8]
    reached_turns = [n for n, s in zip(curve["eval_turns"], curve["eval_success"]) if s >= 0.8]

    def mean_of(key):
        xs = [x for x in curve[key] if x is not None]
        return float(np.mean(xs)) if xs else None

    return {
        "method": method,
        "seed": seed,
        "panel_hash": panel_hash,
        "prior_beta": beta,
        "prior_success_exact": prior_success,
        "curve": curve,
        "success_final": curve["eval_success"][-1],
        "iterations_to_80": reached[0] if reached else None,
        "turns_to_80": reached_turns[0] if reached_turns else None,
        "generated_turns": turns,
        "iterations": n_iter,
        "reference": "mc" if mc else "exact",
        "reference_turns": mc_turns,
        "fidelity_mean": float(np.mean(curve["fidelity"])) if curve["fidelity"] else None,
        "fidelity_corrected_mean": mean_of("fidelity_corrected"),
        "reliability_mean": mean_of("reliability"),
        "pairwise_mean": mean_of("pairwise"),
        "mc_vs_exact_mean": mean_of("mc_vs_exact"),
        "fidelity_exact_sampled_mean": mean_of("fidelity_exact_sampled"),
        "pairwise_exact_sampled_mean": mean_of("pairwise_exact_sampled"),
        "fidelity_skipped": skipped,
        "credit_ms_per_1k_steps": 1000 * credit_ms / max(credit_steps, 1),
    }


def _worker(args):
    """One run in a worker process; its result is also appended to OUT/runs.partial.jsonl as
    soon as it finishes, so an interrupted benchmark keeps the runs it completed."""
    cfg, method, seed, queue = args
    result = run_one(cfg, method, seed, queue)
    with open(Path(cfg.out) / "runs.partial.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result


# ----------------------------------------------------------------------------- statistics
def mean_ci(xs: list[float]) -> dict[str, float | None]:
    """Mean and the half-width of its 95% t-interval (None when fewer than 2 values)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"mean": None, "ci95": None}
    if len(xs) == 1:
        return {"mean": float(xs[0]), "ci95": None}
    from scipy import stats

    sem = float(np.std(xs, ddof=1) / math.sqrt(len(xs)))
    return {"mean": float(np.mean(xs)), "ci95": float(stats.t.ppf(0.975, len(xs) - 1) * sem)}


def success_at_turns(run: dict, budget: float) -> float:
    """Eval success of a run at the last evaluation whose generated turns are <= `budget`."""
    c = run["curve"]
    ok = [s for n, s in zip(c["eval_turns"], c["eval_success"]) if n <= budget]
    return ok[-1] if ok else c["eval_success"][0]


def summarise(cfg: BenchmarkConfig, runs: list[dict]) -> dict[str, Any]:
    methods = {}
    # equal generated turns: the smallest budget every run reached
    budget = min(r["generated_turns"] for r in runs) if runs else 0
    for m in cfg.methods:
        rs = [r for r in runs if r["method"] == m]
        reached = [r["iterations_to_80"] for r in rs if r["iterations_to_80"] is not None]
        it80 = mean_ci(reached)
        it80["reached"] = len(reached)
        it80["of"] = len(rs)
        t80 = mean_ci([r["turns_to_80"] for r in rs if r.get("turns_to_80") is not None])
        t80["reached"], t80["of"] = it80["reached"], len(rs)
        methods[m] = {
            "success_final": mean_ci([r["success_final"] for r in rs]),
            "success_at_equal_turns": mean_ci([success_at_turns(r, budget) for r in rs]),
            "iterations_to_80": it80,
            "turns_to_80": t80,
            "iterations": cfg.iterations_for(m),
            "turns_per_iteration": mean_ci(
                [r["generated_turns"] / r.get("iterations", cfg.iterations) for r in rs]
            ),
            "fidelity": mean_ci([r["fidelity_mean"] for r in rs]),
            "fidelity_corrected": mean_ci([r.get("fidelity_corrected_mean") for r in rs]),
            "reliability": mean_ci([r.get("reliability_mean") for r in rs]),
            "pairwise_order": mean_ci([r.get("pairwise_mean") for r in rs]),
            "mc_vs_exact": mean_ci([r.get("mc_vs_exact_mean") for r in rs]),
            "fidelity_exact_sampled": mean_ci([r.get("fidelity_exact_sampled_mean") for r in rs]),
            "pairwise_exact_sampled": mean_ci([r.get("pairwise_exact_sampled_mean") for r in rs]),
            "fidelity_skipped_iterations": int(sum(r["fidelity_skipped"] for r in rs)),
            "credit_ms_per_1k_steps": float(np.mean([r["credit_ms_per_1k_steps"] for r in rs])),
            "reference_turns": float(np.mean([r.get("reference_turns", 0.0) for r in rs])),
        }
    hashes = sorted({r["panel_hash"] for r in runs})
    config = cfg.model_dump(mode="json", exclude={"out", "workers"})
    config["dump_dir"] = cfg.out
    config["panel_hash"] = hashes[0] if len(hashes) == 1 else hashes
    config["prior_beta_used"] = sorted({round(r["prior_beta"], 4) for r in runs})
    config["prior_success_exact"] = float(np.mean([r["prior_success_exact"] for r in runs]))
    config["reference_used"] = sorted({r.get("reference", "exact") for r in runs})
    config["equal_turns_budget"] = budget
    rel = [x for r in runs for x in r["curve"].get("reliability", []) if x is not None]
    config["reliability_median"] = float(np.median(rel)) if rel else None
    return {"methods": methods, "config": config}


def fmt(stat: dict, digits: int = 3) -> str:
    if stat.get("mean") is None:
        return "n/a"
    s = f"{stat['mean']:.{digits}f}"
    return s + (f" ± {stat['ci95']:.{digits}f}" if stat.get("ci95") is not None else "")


def markdown(summary: dict) -> str:
    cfg = summary["config"]
    mc = "mc" in cfg.get("reference_used", [])
    if math.isnan(cfg["prior_success_exact"]):
        start = (
            f"start policy: expert prior, logit beta {cfg['prior_beta_used']} on the expert's "
            f"action (calibrated to success {cfg['prior_success']} by seeded rollouts)"
        )
    else:
        start = (
            f"start policy softmax(beta A*) with beta {cfg['prior_beta_used']} and exact success "
            f"{cfg['prior_success_exact']:.2f}"
        )
    ref = (
        f"MC A^pi (K = {cfg['mc_k']} continuations, {cfg['mc_states']} sampled states per "
        "evaluated iteration; corrected = attenuation by split-half reliability)"
        if mc
        else "exact A^pi"
    )
    lines = [
        f"# Credit benchmark: {cfg['env']} {json.dumps(cfg['env_kwargs'])}",
        "",
        f"{cfg['seeds']} seeds, {cfg['iterations']} iterations"
        + "".join(f" ({m}: {n})" for m, n in cfg.get("method_iterations", {}).items())
        + f" of {cfg['groups']} tasks x "
        f"{cfg['group_size']} episodes, tabular softmax policy (lr {cfg['lr']}, {start}, "
        f"advantage scale {cfg['adv_scale']}), {cfg['tasks']} train tasks (panel hash "
        f"{cfg['panel_hash']}). Reference: {ref}. Means with 95% CIs over seeds. Turns are "
        f"generated turns (policy decisions) of training rollouts; 'success @ turns' is the "
        f"eval success at {cfg.get('equal_turns_budget', 0)} turns, the smallest budget every "
        "run reached.",
        "",
        "| method | success (final) | success @ turns | iterations to 80% (reached) | turns to 80% "
        "| turns / iteration | fidelity r | r corrected | pairwise order | credit ms / 1k steps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, s in summary["methods"].items():
        it = s["iterations_to_80"]
        t80 = s.get("turns_to_80", {})
        lines.append(
            f"| {m} | {fmt(s['success_final'])} | {fmt(s['success_at_equal_turns'])} | "
            f"{fmt(it, 1)} ({it['reached']}/{it['of']}) | {fmt(t80, 0)} | "
            f"{fmt(s['turns_per_iteration'], 0)} | {fmt(s['fidelity'])} | "
            f"{fmt(s['fidelity_corrected'])} | {fmt(s['pairwise_order'])} | "
            f"{s['credit_ms_per_1k_steps']:.2f} |"
        )
    if mc:
        rel = cfg.get("reliability_median")
        lines += [
            "",
            f"Split-half reliability of the MC reference (Spearman-Brown, median over evaluated "
            f"iterations): {rel:.3f}"
            if rel is not None
            else "",
            "",
        ]
        agree = {m: s["mc_vs_exact"] for m, s in summary["methods"].items()}
        if any(v["mean"] is not None for v in agree.values()):
            lines.append(
                "MC against exact A^pi (Pearson over the sampled steps): "
                + ", ".join(f"{m} {fmt(v)}" for m, v in agree.items())
            )
    return "\n".join(lines) + "\n"


def band(curves: list[list[float]]):
    arr = np.array(curves, dtype=float)
    mean = arr.mean(axis=0)
    if len(arr) < 2:
        return mean, np.zeros_like(mean)
    from scipy import stats

    half = stats.t.ppf(0.975, len(arr) - 1) * arr.std(axis=0, ddof=1) / math.sqrt(len(arr))
    return mean, half


def plot(summary: dict, runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in summary["methods"]:
        rs = sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"])
        # success against generated turns (mean over seeds at each evaluation): methods whose
        # iterations cost different numbers of turns line up at equal budgets
        x = np.mean([r["curve"]["eval_turns"] for r in rs], axis=0)
        mean, half = band([r["curve"]["eval_success"] for r in rs])
        (line,) = axes[0].plot(x, mean, label=m)
        axes[0].fill_between(x, mean - half, mean + half, alpha=0.2, color=line.get_color())
        common = sorted(set.intersection(*(set(r["curve"]["fid_iter"]) for r in rs)))
        if common:
            fid = [
                [dict(zip(r["curve"]["fid_iter"], r["curve"]["fidelity"]))[i] for i in common]
                for r in rs
            ]
            mean, half = band(fid)
            axes[1].plot(common, mean, label=m, color=line.get_color())
            axes[1].fill_between(
                common, mean - half, mean + half, alpha=0.2, color=line.get_color()
            )
    cfg = summary["config"]
    if cfg.get("equal_turns_budget"):  # where 'success @ turns' is read
        axes[0].axvline(cfg["equal_turns_budget"], color="0.4", ls="--", lw=1, label="equal budget")
    axes[0].xaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0")
    )
    axes[0].set(
        xlabel="generated turns (training rollouts)",
        ylabel="eval success",
        title="Success (95% CI over seeds)",
        ylim=(-0.02, 1.02),
    )
    used = cfg.get("reference_used", ["exact"])
    ref = "MC " if used == ["mc"] else ("exact " if used == ["exact"] else "exact / MC ")
    axes[1].set(xlabel="iteration", ylabel="Pearson r", title=f"Fidelity to {ref}A^pi(s,a)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no fidelity curve: no legend
            ax.legend()
    fig.suptitle(f"{cfg['env']} {json.dumps(cfg['env_kwargs'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
#: Flags that are sugar for a config override: flag -> (config key, type; None: JSON).
FLAGS: dict[str, tuple[str, Any]] = {
    "--env": ("env", str),
    "--env-kwargs": ("env_kwargs", None),
    "--agent": ("agent", str),
    "--methods": ("methods", str),
    "--method-options": ("method_options", None),
    "--seeds": ("seeds", int),
    "--iterations": ("iterations", int),
    "--groups": ("groups", int),
    "--group-size": ("group_size", int),
    "--tasks": ("tasks", int),
    "--lr": ("lr", float),
    "--adv-scale": ("adv_scale", str),
    "--prior-success": ("prior_success", float),
    "--prior-beta": ("prior_beta", float),
    "--eval-every": ("eval_every", int),
    "--eval-episodes": ("eval_episodes", int),
    "--fidelity-every": ("fidelity_every", int),
    "--dump-iterations": ("dump_iterations", str),
    "--workers": ("workers", int),
    "--out": ("out", str),
}


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``--config``, the sugar flags of `FLAGS` and trailing overrides."""
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
        epilog="Each flag sets the config key in brackets; any key can also be given as key=value.",
    )
    p.add_argument("--config", help="YAML file of BenchmarkConfig keys")
    fields = BenchmarkConfig.model_fields
    for flag, (key, kind) in FLAGS.items():
        doc = " ".join((fields[key].description or "").split())
        default = fields[key].get_default(call_default_factory=True)
        p.add_argument(flag, type=kind or str, default=None, help=f"[{key}={default}] {doc}")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return p


def parse_args(argv: list[str] | None) -> BenchmarkConfig:
    """The benchmark's config: ``--config FILE`` (or the defaults), then the flags, then the
    trailing ``key=value`` overrides. A flag is sugar for its key (``--seeds 5`` is ``seeds=5``)
    and has no default of its own: every default is `BenchmarkConfig`'s."""
    p = build_parser()
    a = p.parse_args(argv)
    given: dict[str, Any] = {}
    for flag, (key, kind) in FLAGS.items():
        value = getattr(a, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if kind is None:
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                p.error(f"{flag}: invalid JSON: {exc}")
        given[key] = value
    try:
        given.update(parse_overrides(a.overrides))
        return load(BenchmarkConfig, a.config, given).resolved()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def prepare(cfg: BenchmarkConfig) -> tuple[BenchmarkConfig, dict | None]:
    """Checks and work shared by every run: the MC reference needs an env that can branch, and
    the expert-prior beta (envs without a model) is calibrated once here, not once per run."""
    pool = EnvPool(cfg.env, 1, split="train", env_kwargs=cfg.env_kwargs)
    try:
        has_model = pool.description.has_model
        if use_mc(cfg, has_model):
            require_branching(cfg.env, "the MC reference")
        if has_model or cfg.prior_beta is not None or cfg.prior_success <= 0:
            return cfg, None
        tasks = list(range(min(cfg.tasks, len(pool.panel))))
        calibration = calibrate_expert_prior(cfg, pool, tasks)
    finally:
        pool.close()
    return cfg.model_copy(update={"prior_beta": calibration["beta"]}), calibration


#: Settings that may differ between benchmark folders that `merge` combines.
MERGE_FREE = {"methods", "method_options", "method_iterations", "dump_dir", "dump_iterations",
              "panel_hash", "prior_beta_used", "prior_success_exact", "reference_used",
              "equal_turns_budget", "reliability_median", "prior_calibration"}  # fmt: skip


def write_outputs(out: Path, summary: dict, runs: list[dict]) -> None:
    """summary.json, summary.md, runs.jsonl and curves.png in ``out``; the table to stdout."""
    from rich.console import Console
    from rich.markdown import Markdown

    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    with open(out / "runs.jsonl", "w") as f:
        for r in runs:
            f.write(json.dumps(r) + "\n")
    plot(summary, runs, out / "curves.png")
    Console().print(Markdown(markdown(summary)))


def merge(folders: list[str], out: Path) -> dict:
    """One summary over the runs of several benchmark folders made with the same settings (the
    same env, seeds, iterations, start policy and reference; only the methods differ, with their
    options and own iteration counts), e.g. a method added later. Refuses folders whose settings
    differ, or that repeat a method."""

    configs, runs = [], []
    for folder in folders:
        path = Path(folder)
        if not (path / "summary.json").exists() or not (path / "runs.jsonl").exists():
            raise SystemExit(f"error: {folder} has no summary.json and runs.jsonl")
        configs.append(json.loads((path / "summary.json").read_text())["config"])
        runs.extend(json.loads(line) for line in (path / "runs.jsonl").read_text().splitlines())
    first = {k: v for k, v in configs[0].items() if k not in MERGE_FREE}
    for folder, c in zip(folders[1:], configs[1:], strict=True):
        other = {k: v for k, v in c.items() if k not in MERGE_FREE}
        diff = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if diff:
            raise SystemExit(f"error: {folder} differs from {folders[0]} in {diff}")
    methods = [m for c in configs for m in c["methods"]]
    if len(set(methods)) != len(methods):
        raise SystemExit(f"error: a method is in more than one folder: {methods}")
    keep = {k: v for k, v in configs[0].items() if k in BenchmarkConfig.model_fields}
    options = {k: v for c in configs for k, v in c["method_options"].items()}
    own = {k: v for c in configs for k, v in c.get("method_iterations", {}).items()}
    keep |= {
        "methods": methods,
        "method_options": options,
        "method_iterations": own,
        "out": str(out),
    }
    cfg = BenchmarkConfig(**keep)
    summary = summarise(cfg, runs)
    summary["merged_from"] = folders
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, summary, runs)
    return summary


def main(argv: list[str] | None = None) -> dict:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["--merge"]:
        if len(args) != 4 or args[2] != "--out":
            raise SystemExit("usage: benchmark_credit.py --merge DIR,DIR[,...] --out DIR")
        return merge(args[1].split(","), Path(args[3]))
    cfg = parse_args(argv)
    cfg, calibration = prepare(cfg)
    out = Path(cfg.out)
    workers = cfg.workers or min(2, mp.cpu_count())
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.partial.jsonl").unlink(missing_ok=True)
    jobs = [(m, s) for s in range(cfg.seeds) for m in cfg.methods]
    total = sum(cfg.iterations_for(m) for m, _ in jobs)
    runs: list[dict] = []
    console = Console(stderr=True)
    t0 = time.perf_counter()
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(
            f"{len(jobs)} runs ({len(cfg.methods)} methods x {cfg.seeds} seeds)", total=total
        )
        if workers <= 1:

            class Tick:
                def put(self, n):
                    bar.advance(task, n)

            for m, s in jobs:
                runs.append(_worker((cfg, m, s, Tick())))
        else:
            ctx = mp.get_context("spawn")
            with ctx.Manager() as manager:
                queue = manager.Queue()
                with ctx.Pool(workers) as pool:
                    pending = pool.map_async(
                        _worker, [(cfg, m, s, queue) for m, s in jobs], chunksize=1
                    )
                    done = 0
                    while done < total:
                        try:
                            done += queue.get(timeout=0.5)
                            bar.update(task, completed=done)
                        except Exception:
                            if pending.ready():
                                break
                    runs = pending.get()
    summary = summarise(cfg, runs)
    if calibration is not None:
        summary["config"]["prior_calibration"] = calibration
    summary["wall_time_s"] = round(time.perf_counter() - t0, 1)
    write_outputs(out, summary, runs)
    console.print(f"wrote {out}/summary.json, summary.md, curves.png ({summary['wall_time_s']} s)")
    sys.stdout.flush()
    return summary


if __name__ == "__main__":
    main()
