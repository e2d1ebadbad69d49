"""The run folder: where every file of a run lives, atomic JSON writes, and the run's meta record.

::

    config.yaml            the resolved config (every default filled in)
    meta.json              git commit, command, versions, panel hashes, resumes
    metrics.jsonl          one record per iteration (iteration 0 = the initial eval)
    trajectories/iter_<k>.jsonl   every step of iteration k, in the schema of
                           `creditgym.trainers.dump`; read by later tools and the viewer
    eval/iter_<k>.json     per-task results of each evaluation
    checkpoints/iter_<k>/  see `creditgym.trainers.checkpoint`
    warmstart/             the behaviour-cloned model and its report (when warm starting)
    learning_curve.png     written at the end
    summary.json           eval success first/last and the mean phase times
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from creditgym.trainers.config import TrainConfig, apply_overrides, from_dict

__all__ = ["RunFolder", "environment_info", "git_commit", "load_run_config", "panel_info"]


class RunFolder:
    """The files of one run (see the module docstring for the layout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def meta(self) -> Path:
        return self.path / "meta.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def warmstart(self) -> Path:
        return self.path / "warmstart"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    def trajectories(self, iteration: int) -> Path:
        return self.path / "trajectories" / f"iter_{iteration:06d}.jsonl"

    def eval_report(self, iteration: int) -> Path:
        return self.path / "eval" / f"iter_{iteration:06d}.json"

    def has_run(self) -> bool:
        return self.config.exists() or self.metrics.exists()

    @staticmethod
    def fresh(path: str | Path) -> RunFolder:
        """A new run folder at ``path``, or ``path-2``, ``path-3``, ... if it is taken.

        An existing run is never overwritten.
        """
        base = Path(path)
        candidate, n = base, 1
        while RunFolder(candidate).has_run():
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        candidate.mkdir(parents=True, exist_ok=True)
        return RunFolder(candidate)

    def write_json(self, path: Path, data: Any) -> None:
        """Write ``data`` as JSON to ``path`` atomically (a temp file renamed into place)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(path)

    def write_jsonl(self, path: Path, rows: Sequence[dict[str, Any]]) -> None:
        """Write one JSON object per line to ``path`` atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=str) + "\n")
        tmp.replace(path)

    def record_start(self, info: dict[str, Any], start_iteration: int) -> None:
        """Add a start to ``meta.json``: the first one is ``created``, later ones ``resumes``."""
        meta: dict[str, Any] = {}
        if self.meta.exists():
            meta = json.loads(self.meta.read_text())
        if not meta:
            meta = {"created": info, "resumes": []}
        else:
            meta.setdefault("resumes", []).append(info | {"from_iteration": start_iteration})
        self.write_json(self.meta, meta)

    def warmstart_summary(self) -> dict[str, Any] | None:
        """The warm start's report without its per-epoch history, or None if there is none."""
        path = self.warmstart / "warmstart.json"
        if not path.exists():
            return None
        report = json.loads(path.read_text())
        return {k: v for k, v in report.items() if k != "history"}


def git_commit() -> dict[str, Any]:
    """The checkout's HEAD commit and whether tracked files are modified (None when unknown)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return {"commit": commit or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment_info(argv: Sequence[str]) -> dict[str, Any]:
    """Git commit, command line, time, host and library versions for ``meta.json``."""
    import torch
    import transformers

    return {
        "git": git_commit(),
        "command": list(argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "creditgym": importlib.metadata.version("creditgym"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "host": platform.node(),
    }


def panel_info(panel: Any) -> dict[str, Any]:
    """What identifies a task panel in ``meta.json``."""
    return {
        "env": panel.env,
        "split": panel.split,
        "version": panel.version,
        "hash": panel.hash,
        "size": len(panel),
    }


def load_run_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The resolved config saved in a run folder, with optional dotted overrides applied."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no run (no config.yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    if overrides:
        data = apply_overrides(data, overrides)
    data["run_dir"] = str(run_dir)
    return from_dict(data, str(path))
