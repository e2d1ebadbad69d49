"""Checkpoints that let a killed run continue exactly where it stopped.

A checkpoint is a folder ``<run>/checkpoints/iter_<k>/`` holding

- ``learner.pt``: the learner's `state_dict()` (the LoRA adapter or the full model, plus the
  optimizer state);
- ``state.pt``: the loop state (iteration, the task sampler's state, the eval history) and the RNG
  states of python, numpy and torch;
- ``meta.json``: a human-readable summary (iteration, time, file sizes).

Writes are atomic: everything goes into a hidden temp folder that is renamed into place only when
complete, and the ``latest`` pointer is replaced atomically after that. A run killed at any
moment (even while writing) therefore resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creditgym.trainers.samplers import UniformSampler

__all__ = [
    "Checkpoint",
    "TaskSampler",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

_PREFIX = "iter_"


def get_rng_state() -> dict[str, Any]:
    """RNG states of python's `random`, numpy's global generator and torch (CPU)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


#: The former name of the "uniform" task sampler (`creditgym.trainers.samplers`).
TaskSampler = UniformSampler


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns."""

    path: Path
    iteration: int
    learner: dict[str, Any]
    loop: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)


def _name(iteration: int) -> str:
    return f"{_PREFIX}{iteration:06d}"


def save_checkpoint(
    root: str | Path,
    iteration: int,
    learner_state: dict[str, Any],
    loop_state: dict[str, Any],
    *,
    keep: int = 2,
) -> Path:
    """Atomically write checkpoint ``iteration`` under ``root`` and keep the newest ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / _name(iteration)
    tmp = root / f".tmp-{_name(iteration)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(learner_state, tmp / "learner.pt")
    torch.save(
        {"iteration": int(iteration), "loop": loop_state, "rng": get_rng_state()}, tmp / "state.pt"
    )
    sizes = {p.name: p.stat().st_size for p in tmp.iterdir()}
    (tmp / "meta.json").write_text(
        json.dumps({"iteration": int(iteration), "time": time.time(), "bytes": sizes}, indent=1)
    )
    _fsync_dir(tmp)
    if final.exists():  # a re-run of the same iteration after a resume: replace it
        shutil.rmtree(final)
    tmp.rename(final)
    _write_atomic(root / "latest", final.name)
    _fsync_dir(root)
    _prune(root, keep)
    return final


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        if child.is_file():
            with child.open("rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _complete(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.glob(f"{_PREFIX}*")
        if p.is_dir() and (p / "meta.json").exists() and (p / "state.pt").exists()
    )


def _prune(root: Path, keep: int) -> None:
    for old in _complete(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # left by a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder under ``root`` (None when there is none)."""
    root = Path(root)
    if not root.is_dir():
        return None
    pointer = root / "latest"
    if pointer.exists():
        candidate = root / pointer.read_text().strip()
        if (candidate / "meta.json").exists() and (candidate / "state.pt").exists():
            return candidate
    done = _complete(root)
    return done[-1] if done else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder written by `save_checkpoint` (RNG states are not applied).

    Checkpoints are this run's own files, so they are unpickled in full (optimizer states and
    RNG tuples are not plain tensors); never load a checkpoint from an untrusted source.
    """
    path = Path(path)
    try:
        state = torch.load(path / "state.pt", weights_only=False)
        learner = torch.load(path / "learner.pt", weights_only=False)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("envs", "agents", "credit", "trainers"):
            raise RuntimeError(
                f"checkpoint {path} was written before creditgym's packages moved under the "
                f"`creditgym` namespace (it pickles {exc.name!r}); resume it with the creditgym "
                "release that wrote it, or start a new run"
            ) from None
        raise
    return Checkpoint(
        path=path,
        iteration=int(state["iteration"]),
        learner=learner,
        loop=state.get("loop", {}),
        rng=state.get("rng", {}),
    )
