"""The data of one viewer page: the steps of one iteration, every method's advantages, the graph.

`build_payload` turns recorded trajectory groups (one iteration of a run, as the dump holds them)
into the JSON the page renders. The credit modules themselves recompute the advantages from the
recorded steps, over the whole iteration's batch (batch-wide z-scores need every group): the
method the run trained with gets the run's options, every other method its defaults (or the
options a benchmark ran it with). Each method is scaled as the learner received it (the tabular
benchmark divides each batch by its RMS). A method whose inputs are not in the dump (value
estimates, answer log-probs, HiPER's switch tags, ...) is kept as *unavailable* with the reason.

Texts go into a string table (``strings``), steps into columns, so a page of 16 x 8 x 50 steps
stays a few megabytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from creditgym import credit
from creditgym.credit.trajectory import TrajectoryGroup, flat_steps
from creditgym.trainers.viewer.layout import collapse, layout

__all__ = ["SCALES", "ViewInput", "build_payload", "recompute"]

SCALES = ("none", "rms")


@dataclass
class ViewInput:
    """One iteration to show, with what the run recorded about it.

    ``groups`` is the iteration's whole batch in dump order. Per-step arrays are flat in
    (group, trajectory, step) order: ``policy_version``, ``dumped`` (the advantage the learner
    trained on), ``reference`` (exact A^pi or A*, NaN where unknown) and ``token_advantages``
    (per-token, as dumped; None where not recorded).
    """

    groups: list[TrajectoryGroup]
    iteration: int
    source: str
    kind: str  # "run" or "benchmark"
    env_id: str = ""
    trained: str | None = None
    #: Options per method name (the trained method's from the run; a benchmark's for all it ran).
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    scale: str = "none"
    policy_version: Sequence[int | None] | None = None
    dumped: np.ndarray | None = None
    reference: np.ndarray | None = None
    reference_label: str = ""
    reference_short: str = ""
    reference_reason: str = ""
    token_advantages: Sequence[Sequence[float] | None] | None = None
    #: Decodes response token ids to one text piece per token (None: pieces show as ids).
    decode: Callable[[Sequence[int]], list[str]] | None = None
    run_label: str = ""


_NEEDS_REASON = {
    "values": "needs value estimates (Step.values from a value head); this dump has none",
    "entropies": "needs per-token entropies of the response; this dump has none",
    "answer_logprobs": "needs the answer log-probs before/after each turn (IGPO); this dump has none",
}


def _missing_inputs(module: credit.CreditModule, groups: Sequence[TrajectoryGroup]) -> str | None:
    steps = flat_steps(groups)
    for need in sorted(module.needs):
        if need == "values" and any(s.values is None for s in steps):
            return _NEEDS_REASON[need]
        if need == "entropies" and any(s.entropies is None for s in steps):
            return _NEEDS_REASON[need]
        if need == "answer_logprobs" and any(s.answer_logprob_before is None for s in steps):
            return _NEEDS_REASON[need]
    return None


def recompute(
    groups: Sequence[TrajectoryGroup],
    names: Sequence[str],
    options: dict[str, dict[str, Any]],
    scale: str = "none",
) -> list[dict[str, Any]]:
    """Each method's advantages on ``groups``: values, spans, or the reason it is unavailable.

    ``scale="rms"`` divides each method's step values by their RMS over the batch (as the tabular
    benchmark does before its update; span values are passed on unscaled there, and here).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {list(SCALES)}")
    out = []
    for name in names:
        opts = dict(options.get(name, {}))
        entry: dict[str, Any] = {"name": name, "options": opts, "available": False}
        try:
            module = credit.make(name, **opts)
        except (KeyError, TypeError, ValueError) as exc:
            entry["reason"] = f"cannot build it: {exc}"
            out.append(entry)
            continue
        reason = _missing_inputs(module, groups)
        if reason is None:
            try:
                adv = module(groups)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            entry["reason"] = reason
            out.append(entry)
            continue
        values = np.asarray(adv.values, dtype=np.float64)
        if scale == "rms" and len(values):
            values = values / (float(np.sqrt(np.mean(values**2))) + 1e-8)
        entry.update(available=True, values=values, spans=adv.spans)
        out.append(entry)
    return out


class _Strings:
    """A string table: each distinct text stored once, referenced by index."""

    def __init__(self):
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int:
        if text is None:
            return -1
        text = str(text)
        if text not in self._index:
            self._index[text] = len(self.items)
            self.items.append(text)
        return self._index[text]


def _clean(
    values: Sequence[float] | np.ndarray | None, digits: int = 4
) -> list[float | None] | None:
    """Floats rounded for the page, NaN/inf as null (JSON has no NaN)."""
    if values is None:
        return None
    return [
        None if v is None or not math.isfinite(float(v)) else round(float(v), digits)
        for v in values
    ]


def _limit(arrays: list[np.ndarray]) -> float:
    """The colour scale's half-range: the 98th percentile of |advantage| (1 if all are zero)."""
    vals = np.concatenate([np.abs(a[np.isfinite(a)]) for a in arrays]) if arrays else np.zeros(0)
    if not vals.size:
        return 1.0
    lim = float(np.percentile(vals, 98))
    return lim if lim > 1e-12 else (float(vals.max()) or 1.0)


#: The step table's columns, one list per column (row r of every list is one step).
STEP_COLUMNS = (
    "traj",
    "t",
    "obs",
    "action",
    "text",
    "state",
    "valid",
    "reward",
    "pv",
    "node",
    "edge",
)


def build_payload(
    data: ViewInput,
    methods: Sequence[str],
    groups: Sequence[int] | None = None,
    top_k: int = 150,
    layout_engine: str = "auto",
) -> dict[str, Any]:
    """The page's JSON: meta, string table, step columns, methods, reference, groups, tokens.

    ``methods``: the names to recompute (the trained one is added first if missing).
    ``groups``: indices of the groups to include (all by default); advantages are always
    computed over the whole batch.
    """
    batch = data.groups
    n_total = sum(g.num_steps for g in batch)
    shown = list(range(len(batch))) if groups is None else list(groups)
    for g in shown:
        if not 0 <= g < len(batch):
            raise ValueError(f"group {g} is not in this iteration (it has {len(batch)} groups)")
    names = list(dict.fromkeys(([data.trained] if data.trained else []) + list(methods)))
    results = recompute(batch, names, data.method_options, data.scale)

    # Flat positions of every step of the shown groups, in order.
    offsets = np.cumsum([0] + [g.num_steps for g in batch])
    positions = np.concatenate(
        [np.arange(offsets[g], offsets[g + 1]) for g in shown] or [np.zeros(0, dtype=int)]
    ).astype(int)

    table = _StepTable(data, positions)
    out_groups = [table.add_group(g, batch[g], top_k, layout_engine) for g in shown]
    assert table.rows == len(positions) and len(flat_steps(batch)) == n_total

    available = [r for r in results if r["available"]]
    limit = _limit([r["values"][positions] for r in available])
    meta = _meta(data, table.cols["pv"], limit, top_k, available, results)
    meta.update(groups_total=len(batch), steps_total=n_total)
    return {
        "meta": meta,
        "strings": table.strings.items,
        "steps": table.cols,
        "methods": [_method_entry(r, data, positions) for r in results],
        "reference": _reference_entry(data, positions),
        "groups": out_groups,
        "tokens": table.tokens,
    }


class _StepTable:
    """The step columns, token strips and string table, filled group by group."""

    def __init__(self, data: ViewInput, positions: np.ndarray):
        self.data = data
        self.positions = positions
        self.strings = _Strings()
        self.cols: dict[str, list[Any]] = {k: [] for k in STEP_COLUMNS}
        self.tokens: dict[str, Any] = {}

    @property
    def rows(self) -> int:
        return len(self.cols["traj"])

    def add_group(self, g: int, group: Any, top_k: int, layout_engine: str) -> dict[str, Any]:
        """Append a group's steps; return its entry (trajectories, collapsed and laid-out graph)."""
        strings = self.strings
        drawn = collapse(group, top_k=top_k)
        placed = layout(drawn, layout_engine)
        for n in placed["nodes"]:
            n["states"] = [strings(s) for s in n["states"]]
        for e in placed["edges"]:
            e["action"] = strings(e["action"])
            if "actions" in e:
                e["actions"] = [strings(a) for a in e["actions"][:20]]
        start = self.rows
        trajs = []
        traj_edges, traj_nodes = [], []
        for i, traj in enumerate(group.trajectories):
            t_start = self.rows
            for t, step in enumerate(traj.steps):
                self._add_step(step, i, t, drawn.step_node[i][t], drawn.step_edge[i][t])
            trajs.append(
                {
                    "index": i,
                    "won": bool(traj.won),
                    "ret": round(traj.episode_return(), 4),
                    "start": t_start,
                    "end": self.rows,
                }
            )
            traj_edges.append(sorted({e for e in drawn.step_edge[i] if e is not None}))
            traj_nodes.append(sorted(set(drawn.step_node[i]) | _end_node(drawn, i)))
        placed["traj_edges"] = traj_edges
        placed["traj_nodes"] = traj_nodes
        return {
            "index": g,
            "task_id": str(group.task_id),
            "task_type": str(group.trajectories[0].task_type) if group.trajectories else "",
            "start": start,
            "end": self.rows,
            "trajectories": trajs,
            "graph": placed,
        }

    def _add_step(self, step: Any, i: int, t: int, node: int, edge: int | None) -> None:
        row = self.rows
        pos = int(self.positions[row])
        strings, cols, data = self.strings, self.cols, self.data
        cols["traj"].append(i)
        cols["t"].append(t)
        cols["obs"].append(strings(step.observation))
        cols["action"].append(strings(step.action))
        cols["text"].append(strings(step.text) if step.text else -1)
        cols["state"].append(strings(step.state_key))
        cols["valid"].append(1 if step.valid else 0)
        cols["reward"].append(float(step.reward))
        pv = None if data.policy_version is None else data.policy_version[pos]
        cols["pv"].append(None if pv is None else int(pv))
        cols["node"].append(node)
        cols["edge"].append(-1 if edge is None else edge)
        if step.response_ids:
            self.tokens[str(row)] = _token_entry(step, data, pos, strings)


def _method_entry(r: dict[str, Any], data: ViewInput, positions: np.ndarray) -> dict[str, Any]:
    """One method's column: its advantages on the shown steps, or why it is unavailable."""
    entry = {
        "name": r["name"],
        "label": r["name"] + (" (trained)" if r["name"] == data.trained else ""),
        "trained": r["name"] == data.trained,
        "available": r["available"],
        "options": r["options"],
        "note": _options_note(r["name"], r["options"], r["name"] == data.trained),
    }
    if r["available"]:
        entry["values"] = _clean(r["values"][positions])
        spans = r.get("spans")
        entry["spans"] = (
            {k: _clean(np.asarray(v)[positions]) for k, v in spans.items()} if spans else None
        )
    else:
        entry["reason"] = r["reason"]
    return entry


def _reference_entry(data: ViewInput, positions: np.ndarray) -> dict[str, Any] | None:
    """The reference column (exact A^pi, A*, ...), or why there is none; None without one."""
    if data.reference is None and not data.reference_reason:
        return None
    reference: dict[str, Any] = {
        "label": data.reference_label,
        "short": data.reference_short or "reference",
        "available": data.reference is not None,
    }
    if data.reference is not None:
        ref = np.asarray(data.reference, dtype=np.float64)[positions]
        reference["values"] = _clean(ref)
        reference["limit"] = _limit([ref])
    else:
        reference["reason"] = data.reference_reason
    return reference


def _meta(
    data: ViewInput,
    pv_column: list[Any],
    limit: float,
    top_k: int,
    available: list[dict[str, Any]],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """The page header: source, iteration, trained method, colour scale, recompute check."""
    pvs = [v for v in pv_column if v is not None]
    return {
        "source": data.source,
        "kind": data.kind,
        "kind_label": data.run_label
        or ("benchmark (tabular)" if data.kind == "benchmark" else "training run"),
        "iteration": data.iteration,
        "env_id": data.env_id,
        "trained": _trained_note(data),
        "scale_note": "÷ batch RMS (as the benchmark's update)" if data.scale == "rms" else "",
        "policy_versions": (
            (str(min(pvs)) if min(pvs) == max(pvs) else f"{min(pvs)}–{max(pvs)}") if pvs else ""
        ),
        "limit": round(limit, 4),
        "top_k": top_k,
        "default_on": [r["name"] for r in available],
        "check": _dump_check(data, results),
    }


def _end_node(drawn, i: int) -> set[int]:
    """The node a trajectory ends in (its last step's successor), for path highlighting."""
    edges = [e for e in drawn.step_edge[i] if e is not None]
    return {drawn.edges[edges[-1]]["target"]} if edges else set()


def _token_entry(step, data: ViewInput, pos: int, strings: _Strings) -> dict[str, Any]:
    ids = [int(x) for x in step.response_ids]
    pieces = data.decode(ids) if data.decode is not None else [f"#{x}" for x in ids]
    adv = None if data.token_advantages is None else data.token_advantages[pos]
    ent = None if step.entropies is None else list(np.asarray(step.entropies, dtype=float))
    return {
        "ids": ids,
        "tok": [strings(p) for p in pieces],
        "lp": _clean(step.sampler_logprobs),
        "ent": _clean(ent),
        "adv": _clean(adv),
        "spans": _token_spans(step.spans, len(ids)),
    }


def _token_spans(spans: dict[str, Any] | None, n: int) -> dict[str, list[list[int]]] | None:
    """Span ranges as [[start, end], ...] token ranges clipped to the response (as the learner)."""
    if not spans:
        return None
    out = {}
    for name, ranges in spans.items():
        rs = []
        for r in ranges or ():
            a, b = max(0, int(r[0])), min(n, int(r[1]))
            if b > a:
                rs.append([a, b])
        out[str(name)] = rs
    return out


def _options_note(name: str, opts: dict[str, Any], trained: bool) -> str:
    who = "the run's options" if trained else "options"
    if not opts:
        return f"{name}: defaults" + (" (trained with)" if trained else "")
    return f"{name}: {who} " + ", ".join(f"{k}={v}" for k, v in opts.items())


def _trained_note(data: ViewInput) -> str:
    if not data.trained:
        return ""
    opts = data.method_options.get(data.trained) or {}
    extra = (" (" + ", ".join(f"{k}={v}" for k, v in opts.items()) + ")") if opts else ""
    return data.trained + extra


def _dump_check(data: ViewInput, results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Does the trained method, recomputed from the dump, give the advantages the run trained on?"""
    if data.dumped is None or not data.trained:
        return None
    trained = next((r for r in results if r["name"] == data.trained), None)
    dumped = np.asarray(data.dumped, dtype=np.float64)
    if trained is None or not trained["available"]:
        return {"ok": False, "text": f"{data.trained} cannot be recomputed from the dump"}
    known = np.isfinite(dumped)
    if not known.any():
        return None
    diff = float(np.max(np.abs(trained["values"][known] - dumped[known])))
    if diff <= 1e-6:
        return {
            "ok": True,
            "text": f"recomputed {data.trained} = dumped advantages (max |Δ| {diff:.1g})",
        }
    bad = int(np.sum(np.abs(trained["values"][known] - dumped[known]) > 1e-6))
    return {
        "ok": False,
        "text": f"recomputed {data.trained} differs from the dumped advantages on {bad} steps "
        f"(max |Δ| {diff:.3g})",
    }
