"""Run the training function on a Ray cluster with Ray Train's ``TorchTrainer``.

`ray_train` starts ``num_workers`` Ray Train workers; Ray Train joins them in one torch
process group (gloo on CPUs, nccl with ``use_gpu``) and each worker calls the same
`creditgym.trainers.train.train` that ``torchrun ... scripts/train.py`` calls, so the two launchers
give the same run (rank r owns the same groups). The run folder must be on storage every worker
sees (one machine, or a shared filesystem). ``scripts/train.py --ray-workers N`` calls this.

Without ``address`` a local Ray instance is started for the run and shut down after it (Ray 2.60
has no local mode: these are real worker processes); ``address="auto"`` joins a running cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["ray_train"]


def _worker_loop(cfg: dict[str, Any]) -> None:
    """One Ray Train worker: the same training function as torchrun's ranks."""
    import ray.train

    from creditgym.trainers.config import TrainConfig
    from creditgym.trainers.train import train

    context = ray.train.get_context()
    os.environ["LOCAL_RANK"] = str(context.get_local_rank())
    train(
        TrainConfig.model_validate(cfg["config"]),
        run_dir=cfg["run_dir"],
        resume=cfg["resume"],
        argv=cfg["argv"],
    )


def ray_train(
    config: Any,
    *,
    num_workers: int,
    run_dir: str | Path | None = None,
    resume: bool = False,
    use_gpu: bool = False,
    address: str | None = None,
    argv: list[str] | None = None,
) -> Path:
    """Train ``config`` (a `TrainConfig`) on ``num_workers`` Ray Train workers; return the run
    folder. A fresh run needs ``run_dir`` (or the config's) to be new or absent."""
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as exc:
        raise ImportError(
            f"--ray-workers needs Ray Train ({exc}); install the `ray` extra (`make install`)"
        ) from exc
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    path = Path(run_dir if run_dir is not None else config.resolved_run_dir).resolve()
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(
                address="local",
                num_cpus=max(num_workers, os.cpu_count() or 1),
                include_dashboard=False,
                object_store_memory=100_000_000,
                runtime_env={
                    "env_vars": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
                },
            )
        started = True
    try:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={
                "config": config.model_dump(mode="json"),
                "run_dir": str(path),
                "resume": resume,
                "argv": argv or ["scripts/train.py", "--ray-workers", str(num_workers)],
            },
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(name=path.name, storage_path=str(path.parent / ".ray")),
        )
        trainer.fit()
    finally:
        if started:
            ray.shutdown()
    return path
