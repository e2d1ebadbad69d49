"""The training loop: rollout -> credit -> update -> weight sync, with eval, logs and checkpoints.

One iteration (DESIGN.md, "The data flow of one training iteration"):

1. pick B tasks from the train panel (a seeded walk whose position is checkpointed);
2. roll out G episodes per task in lock-step (`creditgym.trainers.rollout.collect`) with the LLM agent;
3. the learner recomputes old log-probs and token entropies (and values / answer log-probs when
   the credit module ``needs`` them) in one pass, filling the `Step` fields;
4. the credit module (any registered name) turns the groups into per-step advantages;
5. the learner takes its PPO-clip update; the new weights go to the generation backend;
6. every k iterations, evaluation on the first tasks of the eval panel (success per task type);
7. the iteration's steps are dumped, a checkpoint is written, metrics are logged.

Everything a run produces lives in its run folder (`creditgym.trainers.run_folder`). A run killed
at any moment continues exactly with ``--resume``: the checkpoint holds the learner (adapter or
model and optimizer), the RNG states, the iteration and the task-panel position; evaluation runs
on forked RNG states so it never changes what training does.

This module holds only the loop. The components come from `creditgym.trainers.wiring`, the dump
rows from `creditgym.trainers.dump`, the timing summary from `creditgym.trainers.summary`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from creditgym.credit.trajectory import TrajectoryGroup, flat_steps
from creditgym.trainers import distributed, memory, plugins, samplers
from creditgym.trainers.checkpoint import (
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from creditgym.trainers.config import TrainConfig
from creditgym.trainers.dump import trajectory_rows
from creditgym.trainers.evaluation import evaluate_policy
from creditgym.trainers.logger import MetricsLogger, read_metrics, truncate_metrics
from creditgym.trainers.progress import TrainingDisplay
from creditgym.trainers.rollout import collect
from creditgym.trainers.run_folder import RunFolder, environment_info, load_run_config, panel_info
from creditgym.trainers.seeding import forked_rng, group_seeds, seed_everything
from creditgym.trainers.summary import (
    PHASES,
    add_bookkeeping,
    finish_times,
    format_breakdown,
    summarize,
)
from creditgym.trainers.wiring import TimedBackend, build_components, make_agent, make_pools

__all__ = [
    "PHASES",
    "RunFolder",
    "RunResult",
    "TimedBackend",
    "Trainer",
    "format_breakdown",
    "group_seeds",
    "load_run_config",
    "make_agent",
    "seed_everything",
    "summarize",
    "train",
    "trajectory_rows",
]


@dataclass
class RunResult:
    """What `train` returns."""

    run_dir: Path
    iterations: int
    metrics: list[dict[str, Any]]


class Trainer:
    """Builds every component from a `TrainConfig` and runs the loop (see the module docstring)."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        run_dir: str | Path | None = None,
        resume: bool = False,
        display: TrainingDisplay | None = None,
        argv: Sequence[str] | None = None,
    ):
        self.config = config
        self.resume = resume
        #: This process's place in a data-parallel run (rank 0 of 1 without a launcher).
        self.dist = distributed.current()
        distributed.check_supported(config, self.dist)
        #: The learner's data-parallel hooks of a multi-rank run (None in one process).
        self.dp: distributed.DataParallel | None = None
        if resume:
            path = Path(run_dir) if run_dir is not None else config.resolved_run_dir
            self.folder = RunFolder(path)
            if not self.folder.config.exists():
                raise FileNotFoundError(f"--resume: {path} holds no run (no config.yaml)")
            distributed.check_resume(self.folder.checkpoints, self.dist)  # before any model load
        elif self.dist.distributed:  # rank 0 picks the fresh folder, every rank uses it
            self.folder = RunFolder(
                distributed.broadcast_path(
                    RunFolder.fresh(run_dir or config.resolved_run_dir).path
                    if self.dist.is_main
                    else None
                )
            )
        else:
            self.folder = RunFolder.fresh(run_dir or config.resolved_run_dir)
        self.argv = list(argv if argv is not None else sys.argv)
        self._display = display
        self.start_iteration = 0
        self._built = False
        #: The async-mode driver (`creditgym.trainers.async_rollout`), started by `_loop`.
        self._async: Any = None

    # ------------------------------------------------------------------ setup
    def build(self, pools: bool = True) -> None:
        """Load the model, learner, backend, agent, credit module and (optionally) env pools."""
        from creditgym.agents.models import resolve_model

        cfg = self.config
        seed_everything(cfg.seed)
        self.model_path = self._warm_start() if cfg.warmstart.episodes else None
        self.model_path = self.model_path or resolve_model(cfg.model.name)
        parts = build_components(cfg, self.model_path)
        self.learner, self.backend, self.timed = parts.learner, parts.backend, parts.timed
        self.agent, self.sampling, self.credit = parts.agent, parts.sampling, parts.credit
        self.eval_history: list[dict[str, Any]] = []
        self._built = True
        if self.dist.distributed:
            self.dp = distributed.DataParallel(cfg.learner.data_parallel)
            self.dp.attach(self.learner)
            self.learner.dist = self.dp
            seed_everything(cfg.seed + 1_000_003 * self.dist.rank)  # each rank samples its own
        if not pools:
            return
        self.pool, self.eval_pool = make_pools(distributed.rank_config(cfg, self.dist))
        self.sampler = samplers.make(
            cfg.sampler.name, num_tasks=len(self.pool.panel), seed=cfg.seed, **cfg.sampler.options
        )
        # trackers and buffers (issue 19), task types for curricula, loss-term options
        self.plugins = plugins.build_for_trainer(self, cfg)
        # one strategy object per run: a stateful one (SPO-tree's edge buffer) is checkpointed
        from creditgym.trainers import strategies

        self.strategy = strategies.make(cfg.rollout.strategy, **cfg.rollout.strategy_options)

    def _warm_start(self) -> str:
        """Behaviour-clone the expert into ``<run>/warmstart/model`` once; reuse it on resume."""
        from creditgym.trainers.warmstart import warm_start_once

        return warm_start_once(self.config, self.folder.warmstart)

    def load_latest_weights(self) -> int:
        """Load the newest checkpoint's learner state (for evaluation); return its iteration."""
        path = latest_checkpoint(self.folder.checkpoints)
        if path is None:
            return 0
        ckpt = load_checkpoint(path)
        self.learner.load_state_dict(ckpt.learner)
        self._sync()
        return ckpt.iteration

    def _write_meta(self) -> None:
        panels = {}
        for label, pool in (("train", self.pool), ("eval", self.eval_pool)):
            if pool is not None:
                panels[label] = panel_info(pool.panel)
        warmstart = self.folder.warmstart_summary() if self.config.warmstart.episodes else None
        info = environment_info(self.argv) | {
            "model_path": self.model_path,
            "warmstart": warmstart,
            "panels": panels,
            "credit": repr(self.credit),
            "logging": self.logger.backends,
        }
        self.folder.record_start(info, self.start_iteration)

    def _restore(self) -> None:
        ckpt_path = latest_checkpoint(self.folder.checkpoints)
        if ckpt_path is None:
            self.display.print(f"resume: no checkpoint in {self.folder.path}; starting over")
            if self.dist.is_main:
                truncate_metrics(self.folder.metrics, 0)
            return
        ckpt = load_checkpoint(ckpt_path)
        distributed.check_world_size(int(ckpt.loop.get("world_size", 1)), self.dist)
        learner_state = (
            ckpt.learner if self.dp is None else self.dp.shard_state(ckpt.learner, self.learner)
        )
        self.learner.load_state_dict(learner_state)
        self.sampler.load_state_dict(ckpt.loop["sampler"])
        self.plugins.load_state_dict(ckpt.loop.get("plugins", {}))
        if hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(ckpt.loop.get("strategy", {}))
        self.eval_history = list(ckpt.loop.get("eval_history", []))
        self.start_iteration = ckpt.iteration
        if self.dist.is_main:
            truncate_metrics(self.folder.metrics, ckpt.iteration)
        last = ckpt.loop.get("last_record")
        logged = {int(r["iteration"]) for r in read_metrics(self.folder.metrics)}
        self._pending_record = last if last and ckpt.iteration not in logged else None
        self._sync()
        set_rng_state(
            ckpt.loop["rank_rng"][self.dist.rank] if "rank_rng" in ckpt.loop else ckpt.rng
        )
        self.display.print(f"resumed {self.folder.path} from iteration {ckpt.iteration}")

    @property
    def display(self) -> TrainingDisplay:
        if self._display is None:
            quiet = None if self.dist.is_main else Console(quiet=True)  # rank 0 reports
            self._display = TrainingDisplay(
                self.config.train.iterations,
                enabled=self.config.logging.progress and quiet is None,
                console=quiet,
            )
        return self._display

    # ------------------------------------------------------------------ phases
    def _sync(self) -> float:
        """Send the learner's weights to the generation backend; return its reported seconds.

        Every backend takes what it needs from the learner (hf shares its module; engines
        reload from its merged export). In async mode generation is paused meanwhile and the
        new version is published to the rollouts afterwards."""
        if self._async is not None:
            return self._async.sync(lambda: float(self.backend.sync_weights(self.learner) or 0.0))
        return float(self.backend.sync_weights(self.learner) or 0.0)

    def evaluate(self, iteration: int) -> dict[str, Any]:
        """Evaluate the current policy on the eval panel (RNG forked: training is unaffected)."""
        assert self.eval_pool is not None
        cfg = self.config.eval
        self.display.phase("eval")
        previous = self.agent.sampling
        self.agent.sampling = dataclasses.replace(previous, temperature=cfg.temperature)
        try:
            paused = self._async.paused() if self._async else contextlib.nullcontext()
            with paused, forked_rng(cfg.seed):
                result = evaluate_policy(self.agent, self.eval_pool, cfg.tasks, seed=cfg.seed)
        finally:
            self.agent.sampling = previous
        self.timed.take()
        agent_metrics = self.agent.metrics(reset=True)
        result["format_error_rate"] = agent_metrics["format_error_rate"]
        self.folder.write_json(
            self.folder.eval_report(iteration), result | {"iteration": iteration}
        )
        metrics = {f"eval/{k}": v for k, v in result.items() if k not in ("per_task", "panel_hash")}
        self.eval_history.append({"iteration": iteration, "success": result["success"]})
        return metrics

    def _eval_due(self, iteration: int) -> bool:
        cfg = self.config.eval
        if self.eval_pool is None:
            return False
        if cfg.every and iteration % cfg.every == 0:
            return True
        return cfg.after_training and iteration == self.config.train.iterations

    def _rollout(
        self, k: int, times: dict[str, float]
    ) -> tuple[list[TrajectoryGroup], dict[str, Any]]:
        """Collect iteration ``k``'s groups; return the non-empty ones and the rollout metrics."""
        if self._async is not None:
            return self._async.rollout(k, times)
        cfg = self.config
        b, g = cfg.rollout.tasks_per_iteration, cfg.rollout.group_size
        mine = distributed.shard_slice(b, self.dist)  # every rank draws all B, rolls out its own
        tasks = self.sampler.next(b)[mine]
        seeds = group_seeds(cfg.seed, k, b)[mine]

        def on_turn(turn: int, active: int) -> None:
            self.display.phase(f"rollout turn {turn} ({active} active)")

        self.timed.take()
        batch = collect(
            self.pool, self.agent, tasks, g, seeds, on_turn=on_turn, strategy=self.strategy
        )
        times["generate"], gen_tokens = self.timed.take()
        times["env"] = batch.stats.get("time_env_s", 0.0)
        times["prompt"] = max(batch.stats.get("time_agent_s", 0.0) - times["generate"], 0.0)
        agent_metrics = self.agent.metrics(reset=True)
        groups = [grp for grp in batch.groups if len(grp.trajectories) > 0]
        for step in flat_steps(groups):
            if step.policy_version is None:
                step.policy_version = k  # sampled by the policy of this iteration
        metrics: dict[str, Any] = {f"rollout/{k_}": v for k_, v in batch.stats.items()}
        metrics.pop("rollout/time_env_s", None)
        metrics.pop("rollout/time_agent_s", None)
        metrics["rollout/generated_tokens"] = float(gen_tokens)
        # env-shard faults of this iteration (restarts, timeouts, recycles, lost episodes)
        metrics.update({f"rollout/{k_}": float(v) for k_, v in self.pool.take_counters().items()})
        metrics.setdefault("rollout/dropped_groups", 0.0)
        metrics["rollout/tasks"] = [int(t) for t in tasks]
        self.sampler.observe(tasks, batch)
        metrics.update({f"agent/{k_}": v for k_, v in agent_metrics.items()})
        return groups, metrics

    def _learn(
        self, groups: list[TrajectoryGroup], metrics: dict[str, Any], times: dict[str, float]
    ) -> Any:
        """Prepare, credit, update and sync on ``groups``; return the credit's `Advantages`."""
        self.display.phase("prepare (old log-probs)")
        t0 = time.perf_counter()
        prep = self.learner.prepare(groups, self.plugins.learner_needs(self.credit))
        times["prepare"] = time.perf_counter() - t0
        metrics.update({_prefixed("train", k_): v for k_, v in (prep or {}).items()})

        self.display.phase("credit")
        t0 = time.perf_counter()
        groups = self.plugins.before_credit(groups, metrics)
        adv = self.credit(groups)
        self.plugins.after_credit(groups, adv, metrics)
        times["credit"] = time.perf_counter() - t0
        metrics.update({f"credit/{k_}": v for k_, v in adv.diagnostics.items()})

        self.display.phase("update")
        t0 = time.perf_counter()
        upd = self.learner.update(groups, adv)
        self.plugins.after_update(groups, adv, metrics)
        times["update"] = time.perf_counter() - t0
        metrics.update({_prefixed("train", k_): v for k_, v in (upd or {}).items()})

        self.display.phase("sync")
        t0 = time.perf_counter()
        reported = self._sync()
        times["sync"] = time.perf_counter() - t0
        metrics["train/sync_reported_s"] = reported
        return adv

    def iteration(self, k: int) -> dict[str, Any]:
        """Run training iteration ``k`` (1-based) and return its metrics record."""
        t_start = time.perf_counter()
        times: dict[str, float] = {}
        groups, metrics = self._rollout(k, times)
        advantages = None
        n_steps = len(flat_steps(groups))
        if self.dp.total(n_steps) if self.dp is not None else n_steps:
            with self._async.learning() if self._async else contextlib.nullcontext():
                advantages = self._learn(groups, metrics, times)
        else:
            metrics["train/skipped"] = 1.0
            self.display.print(f"iteration {k}: every episode failed; nothing to train on")

        t_eval = 0.0
        if self._eval_due(k):
            t0 = time.perf_counter()
            metrics.update(self.evaluate(k))
            t_eval = time.perf_counter() - t0

        t0 = time.perf_counter()
        if self.config.logging.dump_trajectories:
            rows = trajectory_rows(k, groups, advantages)
            if self.dp is not None:  # rank 0 writes every rank's rows, in rank order
                rows = [row for part in self.dp.all_gather(rows) for row in part]
            if self.dist.is_main:
                self.folder.write_jsonl(self.folder.trajectories(k), rows)
        times["dump"] = time.perf_counter() - t0

        times["eval"] = t_eval
        return distributed.reduce_record(finish_times(metrics, times, t_start), self.dp)

    def _sampler_state(self, k: int) -> dict[str, Any]:
        """The task sampler's state to checkpoint after iteration k (async: right after batch k
        was drawn, so the batches drawn since are drawn and played again on resume)."""
        return self._async.sampler_state(k) if self._async else self.sampler.state_dict()

    def _checkpoint(self, k: int, record: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        learner_state = self.learner.state_dict()
        loop = {
            "sampler": self._sampler_state(k),
            "plugins": self.plugins.state_dict(),
            "strategy": getattr(self.strategy, "state_dict", dict)(),
            "eval_history": self.eval_history,
            "last_record": record,
        }
        if self.dp is not None:  # one checkpoint, written by rank 0, with every rank's RNG
            learner_state = self.dp.full_state(learner_state)
            loop["world_size"] = self.dist.world_size
            loop["rank_rng"] = self.dp.all_gather(get_rng_state())
        if self.dist.is_main:
            save_checkpoint(
                self.folder.checkpoints,
                k,
                learner_state,
                loop,
                keep=self.config.train.keep_checkpoints,
            )
        if self.dp is not None:
            self.dp.barrier()  # no rank runs ahead of a checkpoint that is not yet on disk
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ main
    def _start(self) -> None:
        """Build, write the config, restore on resume, open the logger and record the start."""
        cfg = self.config
        if not self._built:
            self.build()
        main = self.dist.is_main
        if main:
            self.folder.path.mkdir(parents=True, exist_ok=True)
            self.folder.config.write_text(cfg.to_yaml())
        self._pending_record = None
        if self.resume:
            self._restore()
        if not main:
            self.logger = distributed.NullLogger()
            return
        self.logger = MetricsLogger(
            self.folder.metrics,
            tensorboard=cfg.logging.tensorboard,
            wandb=cfg.logging.wandb,
            wandb_project=cfg.logging.wandb_project,
            run_name=self.folder.path.name,
            config=cfg.model_dump(mode="json"),
        )
        self._write_meta()
        self.display.print(memory.format_estimate(memory.estimate_learner(self.learner)))
        self.display.print(
            f"run {self.folder.path} | {cfg.env.id} {cfg.env.kwargs} | model {cfg.model.name} | "
            f"backend {cfg.backend.name} | credit {cfg.credit.name} | "
            f"B={cfg.rollout.tasks_per_iteration} G={cfg.rollout.group_size}"
        )

    def _initial_eval(self) -> None:
        """Evaluate and log iteration 0 (a fresh run with ``eval.before_training``)."""
        t0 = time.perf_counter()
        ev = self.evaluate(0)
        ev["time/eval"] = time.perf_counter() - t0
        self.logger.log(0, ev)
        self.display.print(
            f"iter   0 | EVAL success {ev['eval/success']:.2f} "
            f"({int(ev['eval/episodes'])} episodes, {ev['time/eval']:.1f}s)"
        )

    def _loop(self) -> None:
        cfg = self.config
        if self._pending_record is not None:
            self.logger.log(self.start_iteration, self._pending_record)
        fresh = self.start_iteration == 0 and not self.resume
        if fresh and cfg.eval.before_training and self.eval_pool is not None:
            self._initial_eval()
        if cfg.rollout.mode == "async" and self.start_iteration < cfg.train.iterations:
            from creditgym.trainers.async_rollout import AsyncDriver

            self._async = AsyncDriver(self)
        for k in range(self.start_iteration + 1, cfg.train.iterations + 1):
            record = self.iteration(k)
            every = cfg.train.checkpoint_every
            if (every and k % every == 0) or k == cfg.train.iterations:
                self.display.phase("checkpoint")
                t0 = time.perf_counter()
                self._checkpoint(k, record)
                add_bookkeeping(record, "checkpoint", time.perf_counter() - t0)
            self.logger.log(k, record)
            self.display.iteration_done(k, record)

    def _finish(self, t_run: float) -> RunResult:
        """Plot the learning curve, write ``summary.json`` and print the breakdown."""
        cfg = self.config
        if not self.dist.is_main:  # rank 0 writes the run's files
            return RunResult(self.folder.path, cfg.train.iterations, [])
        if cfg.logging.plot:
            from creditgym.trainers.plotting import plot_run

            try:
                png = plot_run(self.folder.path)
                self.display.print(f"learning curve: {png}")
            except Exception as exc:  # a plot must never lose a finished run
                self.display.print(f"could not plot the learning curve: {exc}")
        records = read_metrics(self.folder.metrics)
        summary = summarize(records)
        summary["wall_s"] = time.perf_counter() - t_run
        self.folder.write_json(self.folder.summary, summary)
        self.display.print(format_breakdown(summary))
        return RunResult(self.folder.path, cfg.train.iterations, records)

    def run(self) -> RunResult:
        """Run from the start (or the last checkpoint) to ``train.iterations``."""
        t_run = time.perf_counter()
        self._start()
        try:
            self._loop()
        finally:
            if self._async is not None:
                self._async.close()
                self._async = None
            self.logger.close()
            self.display.close()
        return self._finish(t_run)

    def close(self) -> None:
        for pool in (getattr(self, "pool", None), getattr(self, "eval_pool", None)):
            if pool is not None:
                pool.close()
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()


def _prefixed(prefix: str, key: str) -> str:
    return key if "/" in key else f"{prefix}/{key}"


def train(
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    argv: Sequence[str] | None = None,
) -> RunResult:
    """Build a `Trainer` for ``config`` and run it to ``config.train.iterations``."""
    joined = not distributed.current().distributed
    distributed.setup(config.learner.device)  # a no-op without torchrun / Ray Train
    try:
        trainer = Trainer(config, run_dir=run_dir, resume=resume, argv=argv)
        try:
            return trainer.run()
        finally:
            trainer.close()
    finally:
        if joined:
            distributed.teardown()
