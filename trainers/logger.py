"""Metrics logging: one JSONL line per iteration, plus TensorBoard and W&B when installed.

Metric names are stable and grouped by prefix, so plots and comparisons survive code changes:

- ``rollout/...``  what the policy did (success, success/<task type>, mean return, invalid rate);
- ``credit/...``   the credit module's diagnostics (advantage mean/std, zero fraction, groups);
- ``train/...``    learner outputs (loss, clip fraction, KL, entropy, grad norm, log-prob mismatch);
- ``eval/...``     evaluation on the eval panel (success, success/<task type>);
- ``time/...``     seconds per phase (generate, env, credit, prepare, update, sync, bookkeeping).

The JSONL file is the source of truth (later tools read it); TensorBoard and W&B are mirrors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "read_metrics"]


class MetricsLogger:
    """Append-only JSONL metrics with optional TensorBoard / W&B mirrors."""

    def __init__(
        self,
        path: str | Path,
        *,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "creditgym",
        run_name: str = "run",
        config: dict[str, Any] | None = None,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        self._wandb = None
        #: Which mirrors are active (for the run's metadata).
        self.backends = ["jsonl"]
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path.parent / "tensorboard"))
            self.backends.append("tensorboard")
        if wandb and importlib.util.find_spec("wandb") is not None:
            import wandb as wandb_lib

            self._wandb = wandb_lib.init(
                project=wandb_project,
                name=run_name,
                config=config or {},
                dir=str(self.path.parent),
                resume="allow",
            )
            self.backends.append("wandb")

    def log(self, iteration: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write one record (non-finite floats become null in JSON) and return it."""
        record: dict[str, Any] = {"iteration": int(iteration), "wall_time": time.time()}
        for key, value in metrics.items():
            record[key] = _jsonable(value)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        scalars = {
            k: float(v)
            for k, v in record.items()
            if k not in ("iteration", "wall_time")
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        }
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, global_step=iteration)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=iteration)
        return record

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        with contextlib.suppress(TypeError, ValueError):
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics JSONL file, skipping a torn last line (a killed run)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(path: str | Path, last_iteration: int) -> int:
    """Drop records after ``last_iteration`` (and torn lines) before a resumed run appends.

    Returns how many records were dropped. The rewrite is atomic (temp file + rename).
    """
    path = Path(path)
    if not path.exists():
        return 0
    records = read_metrics(path)
    keep = [r for r in records if int(r.get("iteration", 0)) <= last_iteration]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    tmp.replace(path)
    return len(records) - len(keep)
