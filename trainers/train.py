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

Everything a run produces lives in its run folder (see `RunFolder`). A run killed at any moment
continues exactly with ``--resume``: the checkpoint holds the learner (adapter or model and
optimizer), the RNG states, the iteration and the task-panel position; evaluation runs on forked
RNG states so it never changes what training does.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from creditgym import credit
from creditgym.agents.backends.base import Generation, SamplingConfig
from creditgym.credit.trajectory import TrajectoryGroup, flat_steps
from creditgym.trainers.checkpoint import (
    TaskSampler,
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from creditgym.trainers.config import AgentConfig, TrainConfig, from_dict, learner_config
from creditgym.trainers.evaluation import evaluate_policy
from creditgym.trainers.logger import MetricsLogger, read_metrics, truncate_metrics
from creditgym.trainers.progress import TrainingDisplay
from creditgym.trainers.rollout import EnvPool, collect

__all__ = ["RunFolder", "Trainer", "group_seeds", "train"]

#: Phases whose seconds add up (with bookkeeping) to the iteration time.
PHASES = ("generate", "env", "credit", "prepare", "update", "sync")


def group_seeds(seed: int, iteration: int, count: int) -> list[int]:
    """Reset seeds of an iteration's groups: a pure function of (run seed, iteration, group)."""
    return [
        int(np.random.SeedSequence([seed, iteration, b]).generate_state(1)[0] % (2**31))
        for b in range(count)
    ]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextmanager
def forked_rng(seed: int):
    """Run a block with fresh seeded RNGs, then restore the previous states exactly."""
    saved = get_rng_state()
    _seed_everything(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


class TimedBackend:
    """Wraps a generation backend to add up the seconds spent in `generate`."""

    def __init__(self, backend: Any):
        self._backend = backend
        self.seconds = 0.0
        self.tokens = 0

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig
    ) -> list[Generation]:
        t0 = time.perf_counter()
        out = self._backend.generate(prompts, sampling)
        self.seconds += time.perf_counter() - t0
        self.tokens += sum(len(g.token_ids) for g in out)
        return out

    def take(self) -> tuple[float, int]:
        """Seconds and tokens since the last call."""
        seconds, tokens = self.seconds, self.tokens
        self.seconds, self.tokens = 0.0, 0
        return seconds, tokens

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def _git_commit() -> dict[str, Any]:
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


class RunFolder:
    """The files of one run.

    ::

        config.yaml            the resolved config (every default filled in)
        meta.json              git commit, command, versions, panel hashes, resumes
        metrics.jsonl          one record per iteration (iteration 0 = the initial eval)
        trajectories/iter_<k>.jsonl   every step of iteration k (observation, action, reward,
                               state key, advantage, ...), read by later tools and the viewer
        eval/iter_<k>.json     per-task results of each evaluation
        checkpoints/iter_<k>/  see `creditgym.trainers.checkpoint`
        learning_curve.png     written at the end
    """

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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(path)

    def write_jsonl(self, path: Path, rows: Sequence[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=str) + "\n")
        tmp.replace(path)


def trajectory_rows(
    iteration: int, groups: Sequence[TrajectoryGroup], advantages: np.ndarray | None
) -> list[dict[str, Any]]:
    """One JSON row per step, in the (group, trajectory, step) order of the advantages."""
    rows = []
    pos = 0
    for gi, group in enumerate(groups):
        for ti, traj in enumerate(group.trajectories):
            for si, step in enumerate(traj.steps):
                adv = None if advantages is None else float(advantages[pos])
                pos += 1
                rows.append(
                    {
                        "iteration": iteration,
                        "group": gi,
                        "trajectory": ti,
                        "step": si,
                        "task_id": traj.task_id,
                        "task_type": traj.task_type,
                        "seed": traj.seed,
                        "state_key": step.state_key,
                        "observation": step.observation,
                        "text": step.text,
                        "action": step.action,
                        "valid": step.valid,
                        "reward": step.reward,
                        "next_state_key": step.next_state_key,
                        "terminated": step.terminated,
                        "truncated": step.truncated,
                        "won": traj.won,
                        "advantage": adv,
                        "response_tokens": len(step.response_ids or ()),
                        "prompt_tokens": len(step.prompt_ids or ()),
                    }
                )
    return rows


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
        if resume:
            path = Path(run_dir) if run_dir is not None else config.resolved_run_dir
            self.folder = RunFolder(path)
            if not self.folder.config.exists():
                raise FileNotFoundError(f"--resume: {path} holds no run (no config.yaml)")
        else:
            self.folder = RunFolder.fresh(run_dir or config.resolved_run_dir)
        self.argv = list(argv if argv is not None else sys.argv)
        self._display = display
        self.start_iteration = 0
        self._built = False

    # ------------------------------------------------------------------ setup
    def build(self, pools: bool = True) -> None:
        """Load the model, learner, backend, agent, credit module and (optionally) env pools."""
        from creditgym.agents.backends import make_backend
        from creditgym.agents.models import resolve_model
        from creditgym.trainers.learner import Learner

        cfg = self.config
        _seed_everything(cfg.seed)
        self.model_path = self._warm_start() if cfg.warmstart.episodes else None
        self.model_path = self.model_path or resolve_model(cfg.model.name)
        learner_options = dict(cfg.learner)
        # The learner scores tokens at the sampling temperature, in the agent's context mode.
        learner_options.setdefault("temperature", cfg.agent.temperature or 1.0)
        learner_options.setdefault("context", cfg.agent.context)
        self.learner = Learner(learner_config(learner_options), self.model_path)
        backend_kwargs = dict(cfg.backend.kwargs)
        if cfg.backend.name == "hf":
            backend_kwargs.setdefault("model", self.learner.model)
            backend_kwargs.setdefault("tokenizer", self.learner.tokenizer)
        self.backend = make_backend(cfg.backend.name, self.model_path, **backend_kwargs)
        if not getattr(self.backend, "supports_training", True):
            raise ValueError(
                f"backend {cfg.backend.name!r} cannot return sampled token ids, so it can only "
                "evaluate; train with backend.name=hf or vllm"
            )
        self.timed = TimedBackend(self.backend)
        self.agent, self.sampling = make_agent(cfg.agent, self.timed, self.learner.tokenizer)
        self.credit = credit.make(cfg.credit.name, **cfg.credit.options)
        self.eval_history: list[dict[str, Any]] = []
        self._built = True
        if not pools:
            return
        b, g = cfg.rollout.tasks_per_iteration, cfg.rollout.group_size
        self.pool = EnvPool(cfg.env.id, b * g, split=cfg.env.train_split, env_kwargs=cfg.env.kwargs)
        self.eval_pool: EnvPool | None = None
        if cfg.eval.tasks > 0:
            self.eval_pool = EnvPool(
                cfg.env.id,
                min(cfg.eval.tasks, 64),
                split=cfg.env.eval_split,
                env_kwargs=cfg.env.kwargs,
            )
        self.sampler = TaskSampler(len(self.pool.panel), cfg.seed)

    def _warm_start(self) -> str:
        """Behaviour-clone the expert into ``<run>/warmstart/model`` once; reuse it on resume."""
        from creditgym.trainers.warmstart import warm_start

        out = self.folder.path / "warmstart"
        model = out / "model"
        report = out / "warmstart.json"
        if report.exists() and (model / "config.json").exists():
            return str(model.resolve())
        shutil.rmtree(out, ignore_errors=True)  # a warm start killed half-way: start it again
        ws = self.config.warmstart
        print(f"warm start: behaviour cloning {ws.episodes} expert episodes", flush=True)
        result = warm_start(
            self.config,
            out,
            episodes=ws.episodes,
            epochs=ws.epochs,
            lr=ws.lr,
            mini_batches=ws.mini_batches,
            eval_episodes=ws.eval_episodes,
            progress=self.config.logging.progress,
        )
        before = result.get("held_out_greedy_match_before")
        after = result.get("held_out_greedy_match_after")
        if before is not None:
            print(
                f"warm start: held-out greedy step accuracy {before:.2f} -> {after:.2f} "
                f"({result['seconds']:.0f} s)",
                flush=True,
            )
        return str(Path(result["model"]).resolve())

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
        import transformers

        meta: dict[str, Any] = {}
        if self.folder.meta.exists():
            meta = json.loads(self.folder.meta.read_text())
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        panels = {}
        for label, pool in (("train", self.pool), ("eval", self.eval_pool)):
            if pool is not None:
                p = pool.panel
                panels[label] = {
                    "env": p.env,
                    "split": p.split,
                    "version": p.version,
                    "hash": p.hash,
                    "size": len(p),
                }
        info = {
            "git": _git_commit(),
            "command": self.argv,
            "time": now,
            "python": platform.python_version(),
            "creditgym": importlib.metadata.version("creditgym"),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "host": platform.node(),
            "model_path": self.model_path,
            "warmstart": self._warmstart_summary(),
            "panels": panels,
            "credit": repr(self.credit),
            "logging": self.logger.backends,
        }
        if not meta:
            meta = {"created": info, "resumes": []}
        else:
            meta.setdefault("resumes", []).append(info | {"from_iteration": self.start_iteration})
        self.folder.write_json(self.folder.meta, meta)

    def _warmstart_summary(self) -> dict[str, Any] | None:
        path = self.folder.path / "warmstart" / "warmstart.json"
        if not self.config.warmstart.episodes or not path.exists():
            return None
        report = json.loads(path.read_text())
        return {k: v for k, v in report.items() if k != "history"}

    def _restore(self) -> None:
        ckpt_path = latest_checkpoint(self.folder.checkpoints)
        if ckpt_path is None:
            self.display.print(f"resume: no checkpoint in {self.folder.path}; starting over")
            truncate_metrics(self.folder.metrics, 0)
            return
        ckpt = load_checkpoint(ckpt_path)
        self.learner.load_state_dict(ckpt.learner)
        self.sampler.load_state_dict(ckpt.loop["sampler"])
        self.eval_history = list(ckpt.loop.get("eval_history", []))
        self.start_iteration = ckpt.iteration
        truncate_metrics(self.folder.metrics, ckpt.iteration)
        last = ckpt.loop.get("last_record")
        logged = {int(r["iteration"]) for r in read_metrics(self.folder.metrics)}
        self._pending_record = last if last and ckpt.iteration not in logged else None
        self._sync()
        set_rng_state(ckpt.rng)
        self.display.print(f"resumed {self.folder.path} from iteration {ckpt.iteration}")

    @property
    def display(self) -> TrainingDisplay:
        if self._display is None:
            self._display = TrainingDisplay(
                self.config.train.iterations, enabled=self.config.logging.progress
            )
        return self._display

    # ------------------------------------------------------------------ phases
    def _sync(self) -> float:
        """Send the learner's weights to the generation backend; return its reported seconds."""
        # hf shares (or swaps in) the module; engines reload from the learner's merged export.
        target = self.learner.model if self.config.backend.name == "hf" else self.learner
        seconds = self.backend.sync_weights(target)
        return float(seconds or 0.0)

    def evaluate(self, iteration: int) -> dict[str, Any]:
        """Evaluate the current policy on the eval panel (RNG forked: training is unaffected)."""
        assert self.eval_pool is not None
        cfg = self.config.eval
        self.display.phase("eval")
        previous = self.agent.sampling
        self.agent.sampling = dataclasses.replace(previous, temperature=cfg.temperature)
        try:
            with forked_rng(cfg.seed):
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

    def iteration(self, k: int) -> dict[str, Any]:
        """Run training iteration ``k`` (1-based) and return its metrics record."""
        cfg = self.config
        t_start = time.perf_counter()
        times: dict[str, float] = {}
        b, g = cfg.rollout.tasks_per_iteration, cfg.rollout.group_size
        tasks = self.sampler.next(b)
        seeds = group_seeds(cfg.seed, k, b)

        def on_turn(turn: int, active: int) -> None:
            self.display.phase(f"rollout turn {turn} ({active} active)")

        self.timed.take()
        batch = collect(self.pool, self.agent, tasks, g, seeds, on_turn=on_turn)
        times["generate"], gen_tokens = self.timed.take()
        times["env"] = batch.stats.get("time_env_s", 0.0)
        times["prompt"] = max(batch.stats.get("time_agent_s", 0.0) - times["generate"], 0.0)
        agent_metrics = self.agent.metrics(reset=True)
        groups = [grp for grp in batch.groups if len(grp.trajectories) > 0]
        metrics: dict[str, Any] = {f"rollout/{k_}": v for k_, v in batch.stats.items()}
        metrics.pop("rollout/time_env_s", None)
        metrics.pop("rollout/time_agent_s", None)
        metrics["rollout/generated_tokens"] = float(gen_tokens)
        metrics["rollout/tasks"] = [int(t) for t in tasks]
        metrics.update({f"agent/{k_}": v for k_, v in agent_metrics.items()})

        advantages = None
        steps = flat_steps(groups)
        if steps:
            self.display.phase("prepare (old log-probs)")
            t0 = time.perf_counter()
            prep = self.learner.prepare(groups, set(self.credit.needs))
            times["prepare"] = time.perf_counter() - t0
            metrics.update({_prefixed("train", k_): v for k_, v in (prep or {}).items()})

            self.display.phase("credit")
            t0 = time.perf_counter()
            adv = self.credit(groups)
            times["credit"] = time.perf_counter() - t0
            advantages = adv.values
            metrics.update({f"credit/{k_}": v for k_, v in adv.diagnostics.items()})

            self.display.phase("update")
            t0 = time.perf_counter()
            upd = self.learner.update(groups, adv)
            times["update"] = time.perf_counter() - t0
            metrics.update({_prefixed("train", k_): v for k_, v in (upd or {}).items()})

            self.display.phase("sync")
            t0 = time.perf_counter()
            reported = self._sync()
            times["sync"] = time.perf_counter() - t0
            metrics["train/sync_reported_s"] = reported
        else:
            metrics["train/skipped"] = 1.0
            self.display.print(f"iteration {k}: every episode failed; nothing to train on")

        t_eval = 0.0
        if self._eval_due(k):
            t0 = time.perf_counter()
            metrics.update(self.evaluate(k))
            t_eval = time.perf_counter() - t0

        t0 = time.perf_counter()
        if cfg.logging.dump_trajectories:
            self.folder.write_jsonl(
                self.folder.trajectories(k), trajectory_rows(k, groups, advantages)
            )
        times["dump"] = time.perf_counter() - t0

        times["eval"] = t_eval
        return self._finish_times(metrics, times, t_start)

    def _finish_times(
        self, metrics: dict[str, Any], times: dict[str, float], t_start: float
    ) -> dict[str, Any]:
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

    def _checkpoint(self, k: int, record: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        save_checkpoint(
            self.folder.checkpoints,
            k,
            self.learner.state_dict(),
            {
                "sampler": self.sampler.state_dict(),
                "eval_history": self.eval_history,
                "last_record": record,
            },
            keep=self.config.train.keep_checkpoints,
        )
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ main
    def run(self) -> RunResult:
        cfg = self.config
        t_run = time.perf_counter()
        if not self._built:
            self.build()
        self.folder.path.mkdir(parents=True, exist_ok=True)
        self.folder.config.write_text(cfg.to_yaml())
        self._pending_record = None
        if self.resume:
            self._restore()
        self.logger = MetricsLogger(
            self.folder.metrics,
            tensorboard=cfg.logging.tensorboard,
            wandb=cfg.logging.wandb,
            wandb_project=cfg.logging.wandb_project,
            run_name=self.folder.path.name,
            config=cfg.model_dump(mode="json"),
        )
        self._write_meta()
        display = self.display
        display.print(
            f"run {self.folder.path} | {cfg.env.id} {cfg.env.kwargs} | model {cfg.model.name} | "
            f"backend {cfg.backend.name} | credit {cfg.credit.name} | "
            f"B={cfg.rollout.tasks_per_iteration} G={cfg.rollout.group_size}"
        )
        try:
            if self._pending_record is not None:
                self.logger.log(self.start_iteration, self._pending_record)
            fresh = self.start_iteration == 0 and not self.resume
            if fresh and cfg.eval.before_training and self.eval_pool is not None:
                t0 = time.perf_counter()
                ev = self.evaluate(0)
                ev["time/eval"] = time.perf_counter() - t0
                self.logger.log(0, ev)
                display.print(
                    f"iter   0 | EVAL success {ev['eval/success']:.2f} "
                    f"({int(ev['eval/episodes'])} episodes, {ev['time/eval']:.1f}s)"
                )
            for k in range(self.start_iteration + 1, cfg.train.iterations + 1):
                record = self.iteration(k)
                every = cfg.train.checkpoint_every
                if (every and k % every == 0) or k == cfg.train.iterations:
                    display.phase("checkpoint")
                    t0 = time.perf_counter()
                    self._checkpoint(k, record)
                    _add_bookkeeping(record, "checkpoint", time.perf_counter() - t0)
                self.logger.log(k, record)
                display.iteration_done(k, record)
        finally:
            self.logger.close()
            display.close()
        if cfg.logging.plot:
            from creditgym.trainers.plotting import plot_run

            try:
                png = plot_run(self.folder.path)
                display.print(f"learning curve: {png}")
            except Exception as exc:  # a plot must never lose a finished run
                display.print(f"could not plot the learning curve: {exc}")
        records = read_metrics(self.folder.metrics)
        summary = summarize(records)
        summary["wall_s"] = time.perf_counter() - t_run
        self.folder.write_json(self.folder.path / "summary.json", summary)
        display.print(format_breakdown(summary))
        return RunResult(self.folder.path, cfg.train.iterations, records)

    def close(self) -> None:
        for pool in (getattr(self, "pool", None), getattr(self, "eval_pool", None)):
            if pool is not None:
                pool.close()
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()


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


def _add_bookkeeping(record: dict[str, Any], name: str, seconds: float) -> None:
    """Count work done after the record was built (e.g. the checkpoint) as bookkeeping."""
    record[f"time/{name}"] = seconds
    record["time/bookkeeping"] += seconds
    record["time/iteration"] += seconds
    overhead = record["time/env"] + record["time/credit"] + record["time/bookkeeping"]
    record["time/overhead_frac"] = overhead / record["time/iteration"]


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
    trainer = Trainer(config, run_dir=run_dir, resume=resume, argv=argv)
    try:
        return trainer.run()
    finally:
        trainer.close()


def load_run_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The resolved config saved in a run folder, with optional dotted overrides applied."""
    from creditgym.trainers.config import apply_overrides

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no run (no config.yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    if overrides:
        data = apply_overrides(data, overrides)
    data["run_dir"] = str(run_dir)
    return from_dict(data, str(path))


# Silence tokenizers' fork warning in env worker processes started after tokenisation.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_agent(cfg: AgentConfig, backend: Any, tokenizer: Any) -> tuple[Any, SamplingConfig]:
    """The LLM agent and its sampling options, as an ``agent:`` config section describes them."""
    from creditgym.agents.llm import LLMAgent

    sampling = SamplingConfig(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        stop=tuple(cfg.stop),
    )
    agent = LLMAgent(
        backend,
        tokenizer,
        history_length=cfg.history_length,
        max_prompt_tokens=cfg.max_prompt_tokens,
        sampling=sampling,
        output_format=cfg.output_format,
        context=cfg.context,
        admissible_limit=cfg.admissible_limit,
        response_prefix=cfg.response_prefix,
        action_match=cfg.action_match,
    )
    return agent, sampling
