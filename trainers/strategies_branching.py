"""Rollout strategies that branch: ``mc_chain`` (SPO-chain), ``tree`` (SPO-tree, Tree-GRPO) and
``retry`` (R^3L), registered beside ``lockstep`` (issue 18; specs in shared/ALGORITHMS-2.md).

All three restore envs to intermediate states through `creditgym.trainers.branching.branch_many`
(replay of the recorded actions, or native snapshots) and record what their credit module reads:

- ``mc_chain``: G lock-step rollouts per task; at every segment boundary c (``cutpoint="turn"``:
  each turn start t >= 1, thinned to every ``cutpoint_interval``-th; ``"low_prob"``: turns with a
  response token of p_old < ``prob_threshold``) ``n_mc`` continuations under the current policy
  give V(s_c) = their mean return from c on, written to ``Step.mc_value``. The continuations are
  not trained on (they are not in the batch); a boundary whose continuations all diverged gets
  no value (counted).
- ``tree``: ``mode="spo"``: a tree per task with branching factors ``branching`` (6-6-6); a node
  is ``segment_turns`` turns (the last level runs to the episode's end); leaves are the
  trajectories, prefix steps carry ``node_id`` / ``parent_node_id``. ``mode="tree_grpo"``: M
  chains from the root, then L expansions of N nodes picked uniformly with replacement from
  {root} + non-leaf nodes (a node = one turn), each continued to the end; K leaves kept per tree;
  ``Trajectory.tree_id`` names the tree. SPO mode keeps the edge buffer: each iteration at most
  ``edge_budget_per_task`` (32) edges with A != 0 per task are trained (``Step.extras
  ["edge_selected"]``); the others wait in the buffer, none older than ``edge_max_age`` (8)
  iterations, and are trained once when their task's turn comes (their old tree is re-emitted
  as an extra group after the B current ones). The buffer is the strategy's state
  (`state_dict`), checkpointed with the run.
- ``retry``: G/2 base rollouts per task; a reflector names, for each failed base, the step k to
  retry from; the retry restores the state after the base's first k actions and continues.
  ``reflector="expert"`` (tabular benchmarks): a labelled expert-guided reflector: k = the first
  step whose action differs from the env expert's in that state, and the guided retry plays the
  expert's action at k, then the policy; no such step means no retry (``retry_invalid``). The
  group holds the bases, the retries (``role="retry"``, ``pivot=k``, ``pair_id`` shared with the
  base) and, for a retry that won, its guided copy (``role="retry_guided"``, learn-to-retry).
  With a tabular agent the guidance leaves no trace in the prompts, so the distilled retry and
  the guided one hold the same steps. ``reflector="llm"`` (with ``guide="none"``): the policy
  writes the JSON report of ALGORITHMS-2.md for every base (`llm_reflect`); a report that does
  not parse or validate (`check_reflection`) means no retry and is counted
  (``reflection_invalid``, its text and the reason kept in the base's ``info["reflection"]``).
  ``guide="none"`` lets the policy itself continue from the pivot (no expert action; for LLM
  agents, whose steps need generated tokens).

None of them supports async rollouts (``supports_async = False``; `TrainConfig` refuses
``rollout.mode=async``), and all need env branching (``needs_branching = True``). Every strategy
puts ``stats["generated"]``: all policy decisions of the iteration, continuations included.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from creditgym.agents.base import Agent, Context, Turn, agent_needs
from creditgym.credit.returns import DEFAULT_INVALID_PENALTY
from creditgym.credit.trajectory import Trajectory, TrajectoryGroup
from creditgym.envs.branching import snapshot_from_record
from creditgym.trainers.branching import BranchRequest, branch_many
from creditgym.trainers.shards import EnvPool
from creditgym.trainers.strategies import (
    LockstepStrategy,
    RolloutBatch,
    RolloutStrategy,
    batch_stats,
    register_strategy,
    start_episodes,
)

__all__ = ["MCChainStrategy", "RetryStrategy", "TreeStrategy"]

CUTPOINTS = ("turn", "low_prob")
TREE_MODES = ("spo", "tree_grpo")
REFLECTORS = ("expert", "llm")
GUIDES = ("expert", "none")


def _choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")


def _return_from(traj: Trajectory, t: int) -> float:
    """sum_{u >= t} r_u (env reward minus the invalid-action penalty)."""
    return float(traj.rewards(DEFAULT_INVALID_PENALTY)[t:].sum())


def _merge(stats: dict[str, float], extra: dict[str, float], prefix: str) -> None:
    for key in ("restores", "diverged", "env_errors", "generated"):
        stats[f"{prefix}_{key}"] = stats.get(f"{prefix}_{key}", 0.0) + float(extra.get(key, 0.0))


def _roots(
    pool: EnvPool, task_indices: Sequence[int], seeds: Sequence[int], stats: dict[str, float]
) -> list[tuple[Trajectory, Any]]:
    """One reset per task (slots 0..B-1) and its snapshot: an empty trajectory + the state."""
    pool.ensure(len(task_indices))
    episodes = start_episodes(pool, task_indices, 1, seeds, stats)
    snaps = pool.snapshot_many([ep.slot for ep in episodes])
    out = []
    for ep, snap in zip(episodes, snaps):
        if ep.traj.error is not None:
            raise RuntimeError(f"reset of task {ep.traj.task_id} failed: {ep.traj.error}")
        out.append((ep.traj, snap))
    return out


def _finish(
    pool: EnvPool,
    groups: list[TrajectoryGroup],
    dropped: list[Trajectory],
    stats: dict[str, float],
    generated: float,
) -> RolloutBatch:
    stats = dict(stats)
    current = groups[: int(stats.pop("current_groups", len(groups)))]
    stats.update(batch_stats(current, dropped, int(stats.get("turns", 0))))
    stats["generated"] = float(generated)
    return RolloutBatch(groups=groups, stats=stats, dropped=dropped)


class _BranchingStrategy(RolloutStrategy):
    supports_async: ClassVar[bool] = False
    needs_branching: ClassVar[bool] = True

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (empty for a stateless strategy)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s output."""


# ----------------------------------------------------------------------------------- mc_chain
@register_strategy("mc_chain")
class MCChainStrategy(_BranchingStrategy):
    """SPO-chain: lock-step rollouts plus MC continuations at segment boundaries."""

    def __init__(
        self,
        n_mc: int = 4,
        cutpoint: str = "turn",
        cutpoint_interval: int = 1,
        prob_threshold: float = 0.9,
        mc_v0: bool = False,
    ):
        _choice("cutpoint", cutpoint, CUTPOINTS)
        if n_mc < 1 or cutpoint_interval < 1:
            raise ValueError("n_mc and cutpoint_interval must be >= 1")
        self.n_mc, self.cutpoint, self.interval = int(n_mc), cutpoint, int(cutpoint_interval)
        self.prob_threshold, self.mc_v0 = float(prob_threshold), bool(mc_v0)

    def boundaries(self, traj: Trajectory) -> list[int]:
        """Segment starts t >= 1 (and 0 with ``mc_v0``) where V(s_t) is estimated."""
        if self.cutpoint == "turn":
            cands = list(range(1, len(traj)))
        else:
            cands = []
            for t in range(1, len(traj)):
                lp = traj.steps[t].sampler_logprobs
                if lp is None:
                    raise ValueError(
                        "cutpoint='low_prob' needs the sampler's token log-probs (an LLM agent); "
                        "use cutpoint='turn' with a tabular agent"
                    )
                if np.any(np.exp(np.asarray(lp, dtype=np.float64)) < self.prob_threshold):
                    cands.append(t)
        cands = cands[:: self.interval]
        return ([0] if self.mc_v0 and len(traj) else []) + cands

    def collect(
        self,
        pool: EnvPool,
        agent: Agent,
        task_indices: Sequence[int],
        group_size: int,
        seeds: Sequence[int],
        on_turn: Callable[[int, int], None] | None = None,
    ) -> RolloutBatch:
        base = LockstepStrategy().collect(pool, agent, task_indices, group_size, seeds, on_turn)
        stats = dict(base.stats)
        requests = [
            BranchRequest(traj=t, t=c, k=self.n_mc)
            for g in base.groups
            for t in g.trajectories
            for c in self.boundaries(t)
        ]
        bb = branch_many(pool, agent, requests, on_turn=on_turn)
        missing = 0
        for res in bb.results:
            conts = res.continuations
            if not conts:
                missing += 1
                continue
            t = res.request.t
            res.request.traj.steps[t].mc_value = float(np.mean([_return_from(c, t) for c in conts]))
        _merge(stats, bb.stats, "mc")
        stats["mc_boundaries"] = float(len(requests))
        stats["mc_boundaries_missing"] = float(missing)
        stats["generated"] = stats["steps"] + bb.stats["generated"]
        return RolloutBatch(groups=base.groups, stats=stats, dropped=base.dropped)


# ----------------------------------------------------------------------------------- tree
@register_strategy("tree")
class TreeStrategy(_BranchingStrategy):
    """SPO-tree's branching tree (``mode="spo"``) or Tree-GRPO's M trees (``"tree_grpo"``)."""

    def __init__(
        self,
        mode: str = "spo",
        branching: Sequence[int] = (6, 6, 6),
        segment_turns: int = 1,
        m: int = 2,
        n: int = 2,
        l: int = 1,  # noqa: E741  (the paper's name)
        k: int = 3,
        edge_budget_per_task: int = 32,
        edge_max_age: int = 8,
        seed: int = 0,
    ):
        _choice("mode", mode, TREE_MODES)
        branching = tuple(int(b) for b in branching)
        if not branching or min(branching) < 1 or segment_turns < 1:
            raise ValueError("branching factors and segment_turns must be >= 1")
        if min(m, n, k) < 1 or l < 0 or edge_budget_per_task < 1 or edge_max_age < 0:
            raise ValueError("m, n, k, edge_budget_per_task must be >= 1; l, edge_max_age >= 0")
        self.mode, self.branching, self.segment_turns = mode, branching, int(segment_turns)
        self.m, self.n, self.l, self.k = int(m), int(n), int(l), int(k)
        self.edge_budget, self.edge_max_age = int(edge_budget_per_task), int(edge_max_age)
        self.seed = int(seed)
        self.iteration = 0
        #: SPO edge buffer: task index -> list of [created iteration, group, node ids left].
        self.buffer: dict[int, list[list[Any]]] = defaultdict(list)

    # -- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "buffer": {int(k): copy.deepcopy(v) for k, v in self.buffer.items() if v},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:  # a checkpoint written before the strategy had state
            return
        self.iteration = int(state["iteration"])
        self.buffer = defaultdict(list, {int(k): list(v) for k, v in state["buffer"].items()})

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.iteration])

    def collect(
        self,
        pool: EnvPool,
        agent: Agent,
        task_indices: Sequence[int],
        group_size: int,
        seeds: Sequence[int],
        on_turn: Callable[[int, int], None] | None = None,
    ) -> RolloutBatch:
        stats: dict[str, float] = defaultdict(float)
        roots = _roots(pool, task_indices, seeds, stats)
        rng = self._rng()
        stats["current_groups"] = float(len(roots))
        if self.mode == "spo":
            groups, dropped, generated = self._spo_trees(pool, agent, roots, stats, on_turn)
            groups = self._select_edges(task_indices, groups, rng, stats)
        else:
            groups, dropped, generated = self._grpo_trees(pool, agent, roots, rng, stats, on_turn)
        for g, seed in zip(groups, list(seeds) + [None] * len(groups)):
            g.env_id = pool.env_id
            if seed is not None:
                g.seed = int(seed)
        self.iteration += 1
        return _finish(pool, groups, dropped, stats, generated)

    # -- SPO-tree
    def _spo_trees(self, pool, agent, roots, stats, on_turn):
        depth = len(self.branching)
        leaves: list[list[Trajectory]] = [[] for _ in roots]
        dropped: list[Trajectory] = []
        generated = 0.0
        # frontier: (task b, trajectory so far, snapshot of its end, node id)
        frontier = [(b, traj, snap, None) for b, (traj, snap) in enumerate(roots)]
        for d, factor in enumerate(self.branching):
            last = d == depth - 1
            requests = [
                BranchRequest(traj=tr, t=len(tr), k=factor, snapshot=sn, tag=(b, nid))
                for b, tr, sn, nid in frontier
            ]
            bb = branch_many(
                pool,
                agent,
                requests,
                horizon=None if last else self.segment_turns,
                snapshot_end=not last,
                on_turn=on_turn,
            )
            _merge(stats, bb.stats, "tree")
            generated += bb.stats["generated"]
            dropped.extend(bb.dropped)
            frontier = []
            for res in bb.results:
                b, parent = res.request.tag
                t0 = res.request.t
                for j, cont in enumerate(res.continuations):
                    nid = f"{b}" if parent is None else parent
                    nid = f"{nid}.{j}"
                    for s in cont.steps[t0:]:
                        s.node_id, s.parent_node_id = nid, parent
                    cont.tree_id, cont.role, cont.pivot = str(b), "base", None
                    if cont.info.get("branch", {}).get("open") and not last:
                        frontier.append((b, cont, res.end_snapshots[j], nid))
                    else:
                        leaves[b].append(cont)
        groups = [
            TrajectoryGroup(trajectories=lv, task_id=roots[b][0].task_id)
            for b, lv in enumerate(leaves)
        ]
        return groups, dropped, generated

    def _select_edges(self, task_indices, groups, rng, stats):
        """Edge buffer: at most ``edge_budget`` nonzero edges per task this iteration."""
        from creditgym.credit.spo_tree import node_advantages

        now = self.iteration
        for b, g in enumerate(groups):
            _, _, adv = node_advantages(g)
            edges = sorted(n for n, a in adv.items() if abs(a) > 1e-12)
            self.buffer[int(task_indices[b])].append([now, g, edges])
        extra: list[TrajectoryGroup] = []
        out: list[TrajectoryGroup] = []
        for b, g in enumerate(groups):
            entries = [
                e for e in self.buffer[int(task_indices[b])] if now - e[0] <= self.edge_max_age
            ]
            pool_edges = [(i, n) for i, e in enumerate(entries) for n in e[2]]
            take = len(pool_edges)
            if take > self.edge_budget:
                idx = rng.choice(len(pool_edges), size=self.edge_budget, replace=False)
                chosen = {pool_edges[i] for i in sorted(idx.tolist())}
            else:
                chosen = set(pool_edges)
            for i, e in enumerate(entries):
                picked = {n for (j, n) in chosen if j == i}
                e[2] = [n for n in e[2] if n not in picked]
                if e[1] is g:
                    out.append(_flag(g, picked))
                elif picked:
                    extra.append(_flag(e[1], picked))
            self.buffer[int(task_indices[b])] = [e for e in entries if e[2]]
            stats["edges_trained"] += float(len(chosen))
        for key in list(self.buffer):
            self.buffer[key] = [e for e in self.buffer[key] if now - e[0] < self.edge_max_age]
        stats["edges_buffered"] = float(sum(len(e[2]) for v in self.buffer.values() for e in v))
        stats["replayed_groups"] = float(len(extra))
        return out + extra

    # -- Tree-GRPO
    def _grpo_trees(self, pool, agent, roots, rng, stats, on_turn):
        dropped: list[Trajectory] = []
        generated = 0.0
        counter = [0]

        def tag_new(cont: Trajectory, t0: int, tree: str) -> None:
            parent = cont.steps[t0 - 1].node_id if t0 > 0 else None
            for s in cont.steps[t0:]:
                counter[0] += 1
                s.node_id, s.parent_node_id = f"{tree}:{counter[0]}", parent
                parent = s.node_id
            cont.tree_id, cont.role, cont.pivot = tree, "base", None

        requests = [
            BranchRequest(traj=tr, t=0, k=self.m, snapshot=sn, tag=b)
            for b, (tr, sn) in enumerate(roots)
        ]
        bb = branch_many(pool, agent, requests, on_turn=on_turn)
        _merge(stats, bb.stats, "tree")
        generated += bb.stats["generated"]
        dropped.extend(bb.dropped)
        trees: list[tuple[int, str, list[Trajectory]]] = []
        for res in bb.results:
            b = res.request.tag
            for j, cont in enumerate(res.continuations):
                tree = f"{b}.{j}"
                tag_new(cont, 0, tree)
                trees.append((b, tree, [cont]))
        for _ in range(self.l):
            requests = []
            for ti, (b, _tree, leaves) in enumerate(trees):
                nodes: dict[str, tuple[Trajectory, int]] = {"<root>": (leaves[0], 0)}
                for leaf in leaves:
                    for t, s in enumerate(leaf.steps[:-1]):
                        nodes.setdefault(s.node_id, (leaf, t + 1))
                names = sorted(nodes)
                for pick in rng.choice(len(names), size=self.n, replace=True).tolist():
                    leaf, t = nodes[names[pick]]
                    snap = roots[b][1] if t == 0 else None
                    requests.append(BranchRequest(traj=leaf, t=t, k=1, snapshot=snap, tag=ti))
            bb = branch_many(pool, agent, requests, on_turn=on_turn)
            _merge(stats, bb.stats, "tree")
            generated += bb.stats["generated"]
            dropped.extend(bb.dropped)
            for res in bb.results:
                b, tree, leaves = trees[res.request.tag]
                for cont in res.continuations:
                    tag_new(cont, res.request.t, tree)
                    leaves.append(cont)
        by_task: list[list[Trajectory]] = [[] for _ in roots]
        for b, _tree, leaves in trees:
            if len(leaves) > self.k:
                keep = sorted(rng.choice(len(leaves), size=self.k, replace=False).tolist())
                leaves = [leaves[i] for i in keep]
            by_task[b].extend(leaves)
        groups = [
            TrajectoryGroup(trajectories=lv, task_id=roots[b][0].task_id)
            for b, lv in enumerate(by_task)
        ]
        return groups, dropped, generated


def _flag(group: TrajectoryGroup, picked: set[str]) -> TrajectoryGroup:
    """A copy of `group` whose steps say whether their node is trained this iteration."""
    trajs = []
    for t in group.trajectories:
        steps = [
            dataclasses.replace(s, extras={**s.extras, "edge_selected": s.node_id in picked})
            for s in t.steps
        ]
        trajs.append(dataclasses.replace(t, steps=steps))
    return TrajectoryGroup(
        trajectories=trajs, task_id=group.task_id, seed=group.seed, env_id=group.env_id
    )


# ----------------------------------------------------------------------------------- retry
class _PivotExpert:
    """The guided retry's policy: the env expert's action at each continuation's pivot step
    (the reflector's suggestion), the wrapped agent's everywhere else."""

    def __init__(self, agent: Agent, pivots: dict[int, int]):
        self.agent, self.pivots = agent, pivots
        self.needs = frozenset(agent_needs(agent)) | {"expert_action"}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        out: list[Turn | None] = [None] * len(contexts)
        rest = []
        for i, ctx in enumerate(contexts):
            if self.pivots.get(ctx.episode) == ctx.step and ctx.expert_action is not None:
                out[i] = Turn(action=ctx.expert_action, text=ctx.expert_action)
            else:
                rest.append(i)
        if rest:
            for i, turn in zip(rest, self.agent.act([contexts[i] for i in rest])):
                out[i] = turn
        return out  # type: ignore[return-value]


def expert_divergence(pool: EnvPool, trajs: Sequence[Trajectory]) -> list[int | None]:
    """For each trajectory: the first step whose recorded action differs from the env expert's
    in that state (None: it follows the expert throughout). Replays every trajectory in lock
    step on slots 0..len-1."""
    if not trajs:
        return []
    if not pool.description.has_expert:
        raise TypeError(f"{pool.env_id} has no expert: reflector='expert' needs expert_action()")
    pool.ensure(len(trajs))
    snaps = [snapshot_from_record(pool.env_id, pool.split, t, 0) for t in trajs]
    res = pool.restore_many(list(enumerate(snaps)))
    out: list[int | None] = [None] * len(trajs)
    live = [i for i, r in enumerate(res) if r.error is None]
    t = 0
    while live := [i for i in live if t < len(trajs[i]) and out[i] is None]:
        experts = pool.expert_many(live)
        for i, e in zip(live, experts):
            if e is not None and e != trajs[i].steps[t].action:
                out[i] = t
        live = [i for i in live if out[i] is None]
        if live:
            pool.step_many([(i, trajs[i].steps[t].action) for i in live])
        t += 1
    return out


@register_strategy("retry")
class RetryStrategy(_BranchingStrategy):
    """R^3L reflect-then-retry: G/2 bases per task, a retry from the reflector's pivot for each
    failed base."""

    def __init__(
        self,
        reflector: str = "expert",
        guide: str = "expert",
        guided_copy: bool = True,
        reflection_tokens: int = 256,
        reflection_temperature: float = 1.0,
        reflection_prefix: str = "",
        reflection_schema: bool = False,
    ):
        _choice("reflector", reflector, REFLECTORS)
        _choice("guide", guide, GUIDES)
        if reflector == "llm" and guide == "expert":
            raise ValueError("reflector='llm' takes guide='none' (the model's own suggestion)")
        self.reflector, self.guide, self.guided_copy = reflector, guide, bool(guided_copy)
        self.reflection_tokens = int(reflection_tokens)
        if not float(reflection_temperature) > 0:
            raise ValueError(f"reflection_temperature={reflection_temperature!r} must be > 0")
        #: R^3L's reference samples the report at temperature 1.0 with no prefill; a small model
        #: may need a lower temperature and the report's opening (``'{"trajectory_summary": "'``)
        #: written for it on the prompt side (never trained on; parsed as prefix + output).
        self.reflection_temperature = float(reflection_temperature)
        self.reflection_prefix = str(reflection_prefix)
        #: Off by default (the paper samples the report freely). On, the report is decoded under
        #: `reflection_schema`'s JSON schema (vLLM structured outputs): valid keys, a known
        #: outcome and an in-range retry step by construction, so only a report cut off by
        #: ``reflection_tokens`` can still be invalid.
        self.reflection_schema = bool(reflection_schema)
        if self.reflection_schema and self.reflection_prefix:
            raise ValueError(
                "reflection_schema=True writes the whole report under the schema; "
                "leave reflection_prefix empty"
            )

    def collect(
        self,
        pool: EnvPool,
        agent: Agent,
        task_indices: Sequence[int],
        group_size: int,
        seeds: Sequence[int],
        on_turn: Callable[[int, int], None] | None = None,
    ) -> RolloutBatch:
        n_base = max(1, group_size // 2)
        base = LockstepStrategy().collect(pool, agent, task_indices, n_base, seeds, on_turn)
        stats = dict(base.stats)
        failed = []
        for b, g in enumerate(base.groups):
            for i, t in enumerate(g.trajectories):
                t.role, t.pair_id = "base", f"{b}.{i}"
                if not t.won:
                    failed.append(t)
        reflections: dict[str, Trajectory] = {}
        if self.reflector == "expert":
            pivots = expert_divergence(pool, failed)
        else:
            # the model reflects on every base (a won one may be "success_but_inefficient")
            failed = [t for g in base.groups for t in g.trajectories]
            pivots, reflections = llm_reflect(
                agent,
                failed,
                self.reflection_tokens,
                stats,
                temperature=self.reflection_temperature,
                prefix=self.reflection_prefix,
                schema=self.reflection_schema,
            )
        requests = [
            BranchRequest(traj=t, t=k, k=1, tag=t.pair_id)
            for t, k in zip(failed, pivots)
            if k is not None
        ]
        stats["retry_invalid"] = stats.get("reflection_invalid", 0.0) + float(
            sum(k is None for k in pivots) if self.reflector == "expert" else 0.0
        )
        retry_agent = agent
        if self.guide == "expert":
            retry_agent = _PivotExpert(agent, {i: r.t for i, r in enumerate(requests)})
        bb = branch_many(pool, retry_agent, requests, on_turn=on_turn)
        _merge(stats, bb.stats, "retry")
        by_pair = {t.pair_id: b for b, g in enumerate(base.groups) for t in g.trajectories}
        won = 0
        for res in bb.results:
            for cont in res.continuations:
                cont.role, cont.pivot, cont.pair_id = "retry", res.request.t, res.request.tag
                group = base.groups[by_pair[res.request.tag]]
                group.trajectories.append(cont)
                if cont.won:
                    won += 1
                    if self.guided_copy and self.guide == "expert":
                        group.trajectories.append(dataclasses.replace(cont, role="retry_guided"))
                    if res.request.tag in reflections:  # learn-to-reflect (A = +1 in r3l)
                        group.trajectories.append(reflections[res.request.tag])
        stats["retries"] = float(len(requests))
        stats["retry_won"] = float(won)
        stats["generated"] = stats["steps"] + bb.stats["generated"]
        return RolloutBatch(groups=base.groups, stats=stats, dropped=base.dropped + bb.dropped)


# ----------------------------------------------------------------------------------- reflection
#: The keys of R^3L's JSON reflection report (ALGORITHMS-2.md, "R^3L").
REPORT_KEYS = (
    "trajectory_summary",
    "root_cause_analysis",
    "trajectory_outcome",
    "improvement_suggestion",
    "retry_from_step",
)
OUTCOMES = ("success", "success_but_inefficient", "failure")

REFLECTION_INSTRUCTIONS = (
    "You are reviewing an agent's attempt at a task. Read the numbered steps and reply with "
    "one JSON object and nothing else, with the keys: trajectory_summary (string), "
    "root_cause_analysis (string), trajectory_outcome (one of success, "
    "success_but_inefficient, failure), improvement_suggestion (string), retry_from_step "
    "(integer: the step number to retry from, 0 = the start)."
)


def reflection_schema(n_steps: int, max_chars: int = 160) -> dict[str, Any]:
    """The JSON schema of a report on an ``n_steps``-step trajectory: every key of `REPORT_KEYS`
    in order, each text at most ``max_chars`` characters, the outcome one of `OUTCOMES` and
    0 <= retry_from_step < n_steps. A report decoded under it passes `check_reflection` unless
    it was cut off."""
    if n_steps < 1:
        raise ValueError(f"a report needs a trajectory of at least one step, got {n_steps}")
    text = {"type": "string", "maxLength": int(max_chars)}
    props: dict[str, Any] = {k: dict(text) for k in REPORT_KEYS}
    props["trajectory_outcome"] = {"type": "string", "enum": list(OUTCOMES)}
    props["retry_from_step"] = {"type": "integer", "minimum": 0, "maximum": n_steps - 1}
    return {
        "type": "object",
        "properties": props,
        "required": list(REPORT_KEYS),
        "additionalProperties": False,
    }


def reflection_text(traj: Trajectory, task: str = "") -> str:
    """The user message of a reflection call: the task, each step's observation and action, and
    the outcome."""
    lines = [f"Task: {task}".strip()]
    for t, s in enumerate(traj.steps):
        obs = " ".join(s.observation.split())[:300]
        lines.append(f"Step {t}: observation: {obs} | action: {s.action}")
    lines.append(f"Outcome: {'won' if traj.won else 'not won'}, return {traj.episode_return():g}")
    return "\n".join(lines)


def check_reflection(text: str, n_steps: int) -> tuple[dict[str, Any] | None, str | None]:
    """(report, None) when ``text`` holds a valid report, else (None, why not). The report is the
    span from the first ``{`` to the last ``}``, parsed as JSON; it is valid when every key is
    present, the outcome is a known one and 0 <= retry_from_step < n_steps (the reference's
    ``validate_reflect_report``)."""
    import json

    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None, "no JSON object"
    try:
        report = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg}"
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing:
        return None, f"missing keys {missing}"
    k = report["retry_from_step"]
    if isinstance(k, bool) or not isinstance(k, int):
        return None, f"retry_from_step {k!r} is not an integer"
    if not 0 <= k < n_steps:
        return None, f"retry_from_step {k} is outside [0, {n_steps})"
    if report["trajectory_outcome"] not in OUTCOMES:
        return None, f"trajectory_outcome {report['trajectory_outcome']!r} not in {list(OUTCOMES)}"
    return report, None


def parse_reflection(text: str, n_steps: int) -> dict[str, Any] | None:
    """The valid report in ``text`` (see `check_reflection`), None otherwise."""
    return check_reflection(text, n_steps)[0]


def llm_reflect(
    agent: Agent,
    trajs: Sequence[Trajectory],
    max_tokens: int,
    stats: dict[str, float],
    *,
    temperature: float = 1.0,
    prefix: str = "",
    schema: bool = False,
) -> tuple[list[int | None], dict[str, Trajectory]]:
    """One reflection per trajectory from the LLM agent's own backend (one batched call, or with
    ``schema`` one per trajectory length, each decoded under `reflection_schema`):
    the pivot of each valid report whose outcome is not "success" (None otherwise, counted in
    ``reflection_invalid`` / ``reflection_success``), and each reflection as a one-step
    trajectory (``role="reflection"``, its tokens and log-probs recorded) by pair id
    (`record_reflections`). ``prefix`` opens the reply on the prompt side; the report parsed is
    ``prefix`` + the generated text."""
    from creditgym.agents.backends.base import SamplingConfig

    backend, tokenizer = getattr(agent, "backend", None), getattr(agent, "tokenizer", None)
    if backend is None or tokenizer is None:
        raise TypeError("reflector='llm' needs an LLM agent (with a backend and a tokenizer)")
    if not trajs:
        return [], {}
    prompts = []
    for t in trajs:
        msgs = [
            {"role": "system", "content": REFLECTION_INSTRUCTIONS},
            {"role": "user", "content": reflection_text(t, str(t.steps[0].info.get("task", "")))},
        ]
        text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        prompts.append(list(tokenizer(text + prefix, add_special_tokens=False)["input_ids"]))
    base = getattr(agent, "sampling", SamplingConfig())
    sampling = dataclasses.replace(
        base, temperature=float(temperature), max_new_tokens=max_tokens, stop=()
    )
    if not schema:
        gens = backend.generate(prompts, sampling)
        return record_reflections(trajs, prompts, gens, stats, prefix=prefix)
    # one call per trajectory length: the schema's step range depends on it
    by_len: dict[int, list[int]] = {}
    for i, t in enumerate(trajs):
        by_len.setdefault(len(t), []).append(i)
    gens = [None] * len(trajs)
    for n, idx in sorted(by_len.items()):
        constrained = dataclasses.replace(
            sampling, json_schema=reflection_schema(n, max_chars=max(16, max_tokens // 2))
        )
        for i, g in zip(idx, backend.generate([prompts[i] for i in idx], constrained)):
            gens[i] = g
    return record_reflections(trajs, prompts, gens, stats, prefix=prefix)


def record_reflections(
    trajs: Sequence[Trajectory],
    prompts: Sequence[Sequence[int]],
    gens: Sequence[Any],
    stats: dict[str, float],
    prefix: str = "",
) -> tuple[list[int | None], dict[str, Trajectory]]:
    """`llm_reflect`'s bookkeeping of one generation per trajectory: each text goes to the
    trajectory's ``info["reflection"]`` (``text``, ``valid``, ``error`` = why it is invalid or
    None) and is counted in ``reflections``; an invalid one adds to ``reflection_invalid`` and
    gives pivot None (no retry); a valid "success" verdict adds to ``reflection_success`` and
    gives None too; any other valid one gives its ``retry_from_step`` and a one-step
    ``role="reflection"`` trajectory (by pair id). Each text is ``prefix`` + the generation's."""
    from creditgym.credit.trajectory import Step

    if not len(trajs) == len(prompts) == len(gens):
        raise ValueError(
            f"{len(trajs)} trajectories, {len(prompts)} prompts and {len(gens)} generations"
        )
    pivots: list[int | None] = []
    out: dict[str, Trajectory] = {}
    for t, prompt, gen in zip(trajs, prompts, gens):
        text = prefix + gen.text
        report, error = check_reflection(text, len(t))
        stats["reflections"] = stats.get("reflections", 0.0) + 1
        t.info["reflection"] = {"text": text, "valid": report is not None, "error": error}
        if report is None:
            stats["reflection_invalid"] = stats.get("reflection_invalid", 0.0) + 1
            pivots.append(None)
            continue
        if report["trajectory_outcome"] == "success":
            stats["reflection_success"] = stats.get("reflection_success", 0.0) + 1
            pivots.append(None)
            continue
        pivots.append(int(report["retry_from_step"]))
        step = Step(
            state_key="<reflection>",
            action="",
            reward=0.0,
            text=gen.text,
            prompt_ids=list(prompt),
            response_ids=list(gen.token_ids),
            sampler_logprobs=list(gen.logprobs),
            extras={"report": report},
        )
        out[str(t.pair_id)] = Trajectory(
            steps=[step], task_id=t.task_id, seed=t.seed, role="reflection", pair_id=t.pair_id
        )
    return pivots, out
