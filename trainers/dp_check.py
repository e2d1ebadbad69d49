"""Data-parallel learner updates on a recorded batch: the equality check and the step timer.

A recorded batch is a file ``torch.save({"groups": [...], "advantages": ndarray})`` of trajectory
groups with token ids (one iteration's rollout) and one advantage per step. Run on N ranks::

    python -m torch.distributed.run --standalone --nproc-per-node 2 \\
        -m creditgym.trainers.dp_check --batch BATCH.pt --out DIR --updates 2

each rank takes its contiguous slice of the groups (`creditgym.trainers.distributed.shard_slice`)
and runs ``updates`` learner updates (``prepare`` + ``update``) on it with the ``ddp`` or ``fsdp2``
wrapper; rank 0 writes ``DIR/params.pt`` (the full parameters after the last update) and
``DIR/result.json`` (per-update seconds, the slowest rank's, and the update metrics). With
``--credit NAME`` every rank also runs that credit module on its own groups after the first
``prepare`` (batch statistics all-reduced) and rank 0 writes the gathered advantages, and the
per-step token entropies the module read, in ``result.json``. The ``learner`` options of a job
may hold ``optimizer: sgd``, which replaces the learner's AdamW by plain SGD at the same lr:
AdamW's first steps move a parameter by about lr x sign(gradient), so gradients equal up to
float noise but near 0 can end up lr apart, while SGD's parameter difference is lr times the
gradients' difference. `run_recorded` and `step_times` launch it from Python.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creditgym.credit.trajectory import TrajectoryGroup, flat_steps, total_steps

__all__ = [
    "launch",
    "main",
    "read_result",
    "run_recorded",
    "save_batch",
    "step_times",
    "worker",
    "worker_jobs",
]


def save_batch(path: str | Path, groups: list[TrajectoryGroup], advantages: np.ndarray) -> Path:
    """Write a recorded batch file."""
    path = Path(path)
    torch.save({"groups": groups, "advantages": np.asarray(advantages, dtype=np.float64)}, path)
    return path


def worker(
    batch: str | Path,
    out: str | Path,
    *,
    updates: int = 2,
    mode: str = "ddp",
    model: str = "tiny",
    learner: dict[str, Any] | None = None,
    credit_name: str | None = None,
) -> dict[str, Any]:
    """One rank's part (see the module docstring); returns rank 0's result (others: {})."""
    from creditgym.trainers import distributed

    info = distributed.setup((learner or {}).get("device", "cpu"))
    try:
        return _one_job(batch, out, info, updates, mode, model, learner, credit_name)
    finally:
        distributed.teardown()


def _entropies(step: Any) -> list[float] | None:
    return None if step.entropies is None else np.asarray(step.entropies, float).tolist()


def _one_job(
    batch: str | Path,
    out: str | Path,
    info: Any,
    updates: int,
    mode: str,
    model: str,
    learner: dict[str, Any] | None,
    credit_name: str | None,
) -> dict[str, Any]:
    from creditgym import credit
    from creditgym.agents.models import resolve_model
    from creditgym.credit.base import Advantages
    from creditgym.trainers import distributed
    from creditgym.trainers.learner import Learner, LearnerConfig

    torch.manual_seed(0)
    data = torch.load(batch, weights_only=False)
    groups, values = data["groups"], np.asarray(data["advantages"])
    mine = distributed.shard_slice(len(groups), info)
    start = total_steps(groups[: mine.start])
    local = groups[mine]
    local_adv = values[start : start + total_steps(local)]
    opts = dict(learner or {})
    optimizer = opts.pop("optimizer", "adamw")  # a check option, not a LearnerConfig key
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"unknown optimizer {optimizer!r}: choose adamw (the learner's) or sgd")
    lrn = Learner(LearnerConfig(**opts), resolve_model(model))
    if optimizer == "sgd":  # plain steps: a parameter moves by lr x its gradient
        trainable = [p for g in lrn.optimizer.param_groups for p in g["params"]]
        lrn.optimizer = torch.optim.SGD(trainable, lr=lrn.config.lr)
    dp = None
    if info.distributed:
        dp = distributed.DataParallel(mode)
        dp.attach(lrn)
        lrn.dist = dp
    result: dict[str, Any] = {"world_size": info.world_size, "mode": mode, "updates": []}
    module = credit.make(credit_name) if credit_name else None
    for u in range(updates):
        t0 = time.perf_counter()
        lrn.prepare(local, set(module.needs) if module is not None and u == 0 else set())
        t1 = time.perf_counter()
        if module is not None and u == 0:
            own = (module(local).values.tolist(), [_entropies(s) for s in flat_steps(local)])
            parts = dp.all_gather(own) if dp else [own]
            result["credit"] = [x for adv, _ in parts for x in adv]
            result["entropies"] = [x for _, ent in parts for x in ent]
        metrics = lrn.update(local, Advantages(values=local_adv))
        t2 = time.perf_counter()
        times = np.array([t1 - t0, t2 - t1])
        if dp is not None:
            times = dp.maximum(times)
        result["updates"].append(
            {"prepare_s": float(times[0]), "update_s": float(times[1]), "metrics": metrics}
        )
    state = lrn.model.state_dict()
    if dp is not None:
        state = dp.full_state(state)
    if info.is_main:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in state.items()}, out / "params.pt")
        (out / "result.json").write_text(json.dumps(result, indent=1))
    return result if info.is_main else {}


def worker_jobs(batch: str | Path, jobs: list[dict[str, Any]], *, model: str = "tiny") -> None:
    """Several `worker` runs in one process group (one launch): each job is a dict with
    ``out`` and optional ``updates``, ``mode``, ``learner`` and ``credit_name``."""
    from creditgym.trainers import distributed

    info = distributed.setup("cpu")
    try:
        for job in jobs:
            _one_job(
                batch,
                job["out"],
                info,
                int(job.get("updates", 2)),
                job.get("mode", "ddp"),
                model,
                job.get("learner"),
                job.get("credit_name"),
            )
    finally:
        distributed.teardown()


def launch(args: list[str], nproc: int, timeout: float = 600) -> None:
    """Run ``python -m creditgym.trainers.dp_check ARGS`` on ``nproc`` local ranks (torchrun)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}", "-m", "creditgym.trainers.dp_check", *args]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"dp_check on {nproc} ranks failed:\n{proc.stdout}\n{proc.stderr}")


def read_result(out: str | Path) -> dict[str, Any]:
    """A job's ``result.json``, with ``params``: the path of its ``params.pt``."""
    result = json.loads((Path(out) / "result.json").read_text())
    result["params"] = str(Path(out) / "params.pt")
    return result


def run_recorded(
    batch: str | Path,
    out: str | Path,
    nproc: int,
    *,
    updates: int = 2,
    mode: str = "ddp",
    model: str = "tiny",
    learner: dict[str, Any] | None = None,
    credit_name: str | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """Launch `worker` on ``nproc`` local ranks with torchrun (gloo on a CPU); return
    ``result.json`` (its ``params`` entry: the path of ``params.pt``)."""
    args = ["--batch", str(batch), "--out", str(out), "--updates", str(updates)]
    args += ["--mode", mode, "--model", model, "--learner", json.dumps(learner or {})]
    if credit_name:
        args += ["--credit", credit_name]
    launch(args, nproc, timeout)
    return read_result(out)


def step_times(
    groups: list[TrajectoryGroup],
    advantages: np.ndarray,
    *,
    nprocs: tuple[int, ...] = (1, 2),
    updates: int = 2,
    mode: str = "ddp",
    model: str = "tiny",
    learner: dict[str, Any] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Per-update ``prepare_s`` and ``update_s`` (slowest rank) of the same global batch on each
    rank count in ``nprocs``, every count launched the same way (torchrun)."""
    out: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="creditgym-dp-") as tmp:
        batch = save_batch(Path(tmp) / "batch.pt", groups, advantages)
        for n in nprocs:
            res = run_recorded(
                batch,
                Path(tmp) / f"n{n}",
                n,
                updates=updates,
                mode=mode,
                model=model,
                learner=learner,
            )
            out[str(n)] = {
                "prepare_s": [u["prepare_s"] for u in res["updates"]],
                "update_s": [u["update_s"] for u in res["updates"]],
            }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", required=True, help="recorded batch file (save_batch)")
    p.add_argument("--out", required=True, help="folder for params.pt and result.json")
    p.add_argument("--updates", type=int, default=2)
    p.add_argument("--mode", default="ddp", help="ddp or fsdp2")
    p.add_argument("--model", default="tiny", help="model name or folder (resolve_model)")
    p.add_argument("--learner", default="{}", help="LearnerConfig fields as JSON")
    p.add_argument("--credit", default=None, help="also run this credit module per rank")
    p.add_argument(
        "--jobs", default=None, help="JSON list of jobs for worker_jobs (then --out is unused)"
    )
    args = p.parse_args(argv)
    if args.jobs:
        worker_jobs(args.batch, json.loads(args.jobs), model=args.model)
        return 0
    worker(
        args.batch,
        args.out,
        updates=args.updates,
        mode=args.mode,
        model=args.model,
        learner=json.loads(args.learner),
        credit_name=args.credit,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
