"""Phase timing of an iteration and the end-of-run summary (`summary.json` and its printout)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

__all__ = ["PHASES", "add_bookkeeping", "finish_times", "format_breakdown", "summarize"]

#: Phases whose seconds add up (with bookkeeping) to the iteration time.
PHASES = ("generate", "env", "credit", "prepare", "update", "sync")


def finish_times(
    metrics: dict[str, Any], times: dict[str, float], t_start: float
) -> dict[str, Any]:
    """Add ``time/<phase>`` entries to ``metrics``: the iteration total (eval excluded), every
    phase in `PHASES`, the unaccounted rest as ``bookkeeping`` and the overhead share."""
    total = time.perf_counter() - t_start - times["eval"]
    for phase in PHASES:
        times.setdefault(phase, 0.0)
    accounted = sum(times[p] for p in PHASES)
    times["bookkeeping"] = max(total - accounted, 0.0)
    times["iteration"] = total
    for key, value in times.items():
        metrics[f"time/{key}"] = value
    overhead = times["env"] + times["credit"] + times["bookkeeping"]
    metrics["time/overhead_frac"] = overhead / total if total > 0 else 0.0
    return metrics


def add_bookkeeping(record: dict[str, Any], name: str, seconds: float) -> None:
    """Count work done after the record was built (e.g. the checkpoint) as bookkeeping."""
    record[f"time/{name}"] = seconds
    record["time/bookkeeping"] += seconds
    record["time/iteration"] += seconds
    overhead = record["time/env"] + record["time/credit"] + record["time/bookkeeping"]
    record["time/overhead_frac"] = overhead / record["time/iteration"]


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Eval success before/after, and the mean seconds and share of each phase per iteration."""
    iters = [r for r in records if "time/iteration" in r]
    evals = [r for r in records if isinstance(r.get("eval/success"), (int, float))]
    out: dict[str, Any] = {"iterations": len(iters)}
    if evals:
        out["eval_success_first"] = {
            "iteration": evals[0]["iteration"],
            "success": evals[0]["eval/success"],
        }
        out["eval_success_last"] = {
            "iteration": evals[-1]["iteration"],
            "success": evals[-1]["eval/success"],
        }
    if iters:
        total = sum(r["time/iteration"] for r in iters) / len(iters)
        phases = {}
        for phase in (*PHASES, "bookkeeping"):
            mean = sum(float(r.get(f"time/{phase}") or 0.0) for r in iters) / len(iters)
            phases[phase] = {"seconds": mean, "share": mean / total if total > 0 else 0.0}
        out["iteration_s"] = total
        out["phases"] = phases
        out["env_credit_bookkeeping_share"] = sum(
            phases[p]["share"] for p in ("env", "credit", "bookkeeping")
        )
    return out


def format_breakdown(summary: dict[str, Any]) -> str:
    """The summary as a few readable lines."""
    lines = []
    if "phases" in summary:
        parts = ", ".join(
            f"{name} {v['seconds']:.1f}s ({100 * v['share']:.1f}%)"
            for name, v in summary["phases"].items()
        )
        lines.append(
            f"mean iteration {summary['iteration_s']:.1f}s over {summary['iterations']}: {parts}; "
            f"env+credit+bookkeeping {100 * summary['env_credit_bookkeeping_share']:.2f}%"
        )
    if "eval_success_first" in summary:
        a, b = summary["eval_success_first"], summary["eval_success_last"]
        lines.append(
            f"eval success {a['success']:.3f} (iteration {a['iteration']}) -> "
            f"{b['success']:.3f} (iteration {b['iteration']})"
        )
    if "wall_s" in summary:
        lines.append(f"wall time {summary['wall_s']:.0f}s")
    return "\n".join(lines)
