"""The training run's console display: a live progress bar plus one summary line per iteration.

On a terminal, `rich` shows a bar over iterations with the current phase (rollout turn, update,
eval, ...). Everywhere (terminals, CI logs, `make demo` output piped to a file) every finished
iteration prints one line with success, losses and phase timings, so the log reads top to bottom.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["TrainingDisplay", "format_summary"]


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def format_summary(iteration: int, total: int, metrics: dict[str, Any]) -> str:
    """One line: success, return, losses and where the iteration's time went."""
    parts = [
        f"iter {iteration:>3}/{total}",
        f"success {_fmt(metrics.get('rollout/success'), '.2f')}",
        f"return {_fmt(metrics.get('rollout/mean_return'), '.2f')}",
        f"invalid {_fmt(metrics.get('rollout/invalid_rate'), '.2f')}",
        f"pg_loss {_fmt(metrics.get('train/pg_loss'), '.4f')}",
        f"kl {_fmt(metrics.get('train/kl'), '.4f')}",
        f"clip {_fmt(metrics.get('train/clip_frac'), '.3f')}",
    ]
    if "eval/success" in metrics:
        parts.append(f"EVAL success {_fmt(metrics['eval/success'], '.2f')}")
    phases = ["generate", "env", "credit", "prepare", "update", "sync", "bookkeeping"]
    timing = " ".join(
        f"{p[:3]} {_fmt(metrics.get(f'time/{p}'), '.1f')}" for p in phases if f"time/{p}" in metrics
    )
    parts.append(f"[{timing} | iter {_fmt(metrics.get('time/iteration'), '.1f')}s]")
    return " | ".join(parts)


class TrainingDisplay:
    """Live progress (on a terminal) and per-iteration summary lines (always)."""

    def __init__(
        self, total: int, start: int = 0, enabled: bool = True, console: Console | None = None
    ):
        self.console = console or Console(stderr=False, highlight=False)
        self.total = total
        live = enabled and self.console.is_terminal and sys.stdout.isatty()
        self._progress: Progress | None = None
        self._task = None
        if live:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[phase]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task("train", total=total, completed=start, phase="")
            self._progress.start()

    def phase(self, text: str) -> None:
        """Show what the current iteration is doing (no-op without a terminal)."""
        if self._progress is not None:
            self._progress.update(self._task, phase=text)

    def iteration_done(self, iteration: int, metrics: dict[str, Any]) -> None:
        self.print(format_summary(iteration, self.total, metrics))
        if self._progress is not None:
            self._progress.update(self._task, completed=iteration, phase="")

    def print(self, text: str) -> None:
        self.console.print(text, markup=False, soft_wrap=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
