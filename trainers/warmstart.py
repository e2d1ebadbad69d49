"""Behaviour cloning from an env's expert: a supervised warm start before RL.

A 135M-parameter model rarely names an admissible action, so from scratch almost every turn is
invalid and no episode is won: every group ties and RL has nothing to compare. The usual remedy
(the ALFWorld/WebShop agent papers fine-tune on expert trajectories before RL) is a short
supervised phase on demonstrations. Here the demonstrations come from the env's own expert
(`TextEnv.expert_action`), played on the *train* panel, and are recorded in exactly the format the
policy later samples in:

- the prompt is `LLMAgent.prompt_ids` of the run's ``agent:`` section (template, history,
  admissible list, response prefix), so nothing is re-formatted between warm start and RL;
- the response is the expert action in the output format (``<action>...</action>`` minus the
  response prefix the prompt already holds).

`warm_start` trains LoRA (or full) weights on them with `Learner.supervised_update`, merges them
into a plain Hugging Face folder and writes a JSON report. The RL run then starts from that folder
with ``model.name=<out>/model``; its KL reference is the warm-started model.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.agents.base import Context, Turn, check_format
from creditgym.agents.oracle import OracleAgent
from creditgym.credit.trajectory import TrajectoryGroup
from creditgym.trainers.config import TrainConfig
from creditgym.trainers.rollout import EnvPool, collect
from creditgym.trainers.wiring import make_agent

__all__ = ["DemonstrationAgent", "demonstrations", "warm_start", "warm_start_once"]


class DemonstrationAgent:
    """Plays the env's expert; records the LLM agent's prompt and the expert's reply as tokens."""

    #: The rollout hands it the expert action as data (`Context.expert_action`).
    needs = OracleAgent.needs

    def __init__(self, llm: Any):
        if llm.output_format != "action":
            raise ValueError(
                f"behaviour cloning supports output_format='action' (got "
                f"{llm.output_format!r}): the expert gives a bare action, which only that format "
                "wraps unambiguously"
            )
        self.llm = llm
        self.expert = OracleAgent()

    def response_text(self, action: str) -> str:
        """The reply the policy should write after its prompt (response prefix excluded)."""
        full = f"<action>{action}</action>"
        prefix = self.llm.response_prefix
        if prefix and not full.startswith(prefix):
            raise ValueError(
                f"response_prefix {prefix!r} is not a prefix of the action format {full!r}"
            )
        return full[len(prefix) :]

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        turns = []
        tok = self.llm.tokenizer
        for ctx, expert in zip(contexts, self.expert.act(contexts)):
            text = self.response_text(expert.action)
            response = list(tok.encode(text, add_special_tokens=False))
            turns.append(
                Turn(
                    action=expert.action,
                    text=text,
                    prompt_ids=self.llm.prompt_ids(ctx),
                    response_ids=response,
                    logprobs=[0.0] * len(response),
                )
            )
        return turns


def demonstrations(
    pool: EnvPool, agent: DemonstrationAgent, episodes: int, seed: int, batch: int
) -> tuple[list[TrajectoryGroup], dict[str, float]]:
    """Play `episodes` expert episodes on distinct tasks of the pool's panel (seeded choice)."""
    n_tasks = len(pool.panel)
    if episodes > n_tasks:
        raise ValueError(f"asked for {episodes} demonstrations but the panel has {n_tasks} tasks")
    rng = np.random.default_rng(seed)
    tasks = rng.permutation(n_tasks)[:episodes]
    groups: list[TrajectoryGroup] = []
    won = steps = 0
    for start in range(0, episodes, batch):
        chunk = [int(t) for t in tasks[start : start + batch]]
        seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=len(chunk))]
        out = collect(pool, agent, chunk, 1, seeds)
        for g in out.groups:
            for t in g.trajectories:
                won += int(t.won)
                steps += len(t.steps)
        groups.extend(out.groups)
    n = sum(len(g.trajectories) for g in groups)
    if won < n:
        raise RuntimeError(
            f"the expert won only {won} of {n} demonstrations; refusing to clone a failing "
            "expert (are episodes cut shorter than a solution? raise env.kwargs.max_steps)"
        )
    return groups, {"episodes": float(n), "steps": float(steps), "expert_success": won / max(n, 1)}


def warm_start(
    config: TrainConfig,
    out: str | Path,
    *,
    episodes: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    mini_batches: int | None = None,
    eval_episodes: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Clone the expert of ``config.env`` into ``config.model``; write ``<out>/model`` and a report.

    Each option left at None is taken from ``config.warmstart`` (its defaults are the only ones).
    Demonstrations come from the train split; the held-out step accuracy (greedy response equals
    the expert's, token by token) is measured on `eval_episodes` expert episodes of the eval split
    before and after training.
    """
    from creditgym.agents.models import resolve_model

    given = dict(
        episodes=episodes,
        epochs=epochs,
        lr=lr,
        mini_batches=mini_batches,
        eval_episodes=eval_episodes,
    )
    ws = config.warmstart.model_copy(update={k: v for k, v in given.items() if v is not None})
    if ws.episodes < 1 or ws.epochs < 1:
        raise ValueError("episodes and epochs must be >= 1")
    check_format(config.env.id, config.agent.output_format)  # before a model is loaded
    out = Path(out)
    if (out / "model" / "config.json").exists():
        raise FileExistsError(f"{out}/model already exists; choose another --out")
    t_start = time.perf_counter()
    model_path = resolve_model(config.model.name)
    learner, agent = _learner_and_agent(config, model_path, ws.lr)
    demos, demo_stats, held_out = _demonstration_sets(config, agent, ws)
    report: dict[str, Any] = {
        "source_model": model_path,
        "env": config.env.id,
        "env_kwargs": dict(config.env.kwargs),
        "train_split": config.env.train_split,
        "eval_split": config.env.eval_split,
        "demonstrations": demo_stats,
        "epochs": ws.epochs,
        "lr": ws.lr,
        "mini_batches": ws.mini_batches,
        "finetune": learner.config.finetune,
        "history": [],
    }
    if held_out:
        report["held_out_greedy_match_before"] = learner.greedy_match(held_out)
    report["history"] = _clone(learner, demos, ws.epochs, ws.mini_batches, config.seed, progress)
    report["train_greedy_match"] = learner.greedy_match(demos)
    if held_out:
        report["held_out_greedy_match_after"] = learner.greedy_match(held_out)
    report["model"] = learner.save_merged(out / "model")
    report["seconds"] = time.perf_counter() - t_start
    (out / "warmstart.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _learner_and_agent(config: TrainConfig, model_path: str, lr: float) -> tuple[Any, Any]:
    """The learner to clone into (no KL, temperature 1) and the agent that records demos."""
    from creditgym.trainers.learner import Learner

    options = config.resolved_learner(lr=lr, kl_coef=0.0, temperature=1.0, seed=config.seed)
    learner = Learner(options, model_path)
    llm, _ = make_agent(config.agent, None, learner.tokenizer)
    return learner, DemonstrationAgent(llm)


def _demonstration_sets(
    config: TrainConfig, agent: DemonstrationAgent, ws: Any
) -> tuple[list[TrajectoryGroup], dict[str, float], list[TrajectoryGroup]]:
    """Expert episodes of the train split, their stats, and the held-out ones (eval split)."""
    kwargs = config.env.kwargs
    batch = 16
    train_pool = EnvPool(config.env.id, batch, split=config.env.train_split, env_kwargs=kwargs)
    demos, demo_stats = demonstrations(train_pool, agent, ws.episodes, config.seed, batch)
    held_out: list[TrajectoryGroup] = []
    if ws.eval_episodes > 0:
        eval_pool = EnvPool(config.env.id, batch, split=config.env.eval_split, env_kwargs=kwargs)
        n_eval = min(ws.eval_episodes, len(eval_pool.panel))
        held_out, _ = demonstrations(eval_pool, agent, n_eval, config.seed + 1, batch)
    return demos, demo_stats, held_out


def _clone(
    learner: Any,
    demos: list[TrajectoryGroup],
    epochs: int,
    mini_batches: int,
    seed: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """``epochs`` supervised passes over ``demos``; the metrics of each."""
    history = []
    bar = _bar(progress, epochs)
    for epoch in range(1, epochs + 1):
        m = learner.supervised_update(demos, mini_batches=mini_batches, seed=seed)
        m["epoch"] = epoch
        history.append(m)
        if bar is not None:
            bar.set_postfix(nll=f"{m['sft/nll']:.3f}")
            bar.update(1)
        else:
            print(f"epoch {epoch}/{epochs}: nll {m['sft/nll']:.3f} ({m['sft/update_s']:.0f} s)")
    if bar is not None:
        bar.close()
    return history


def warm_start_once(config: TrainConfig, out: str | Path) -> str:
    """Behaviour-clone the expert into ``<out>/model`` once; reuse a finished one (on resume).

    ``config.warmstart`` holds the options. Returns the resolved path of the model folder.
    """
    out = Path(out)
    model = out / "model"
    report = out / "warmstart.json"
    if report.exists() and (model / "config.json").exists():
        return str(model.resolve())
    shutil.rmtree(out, ignore_errors=True)  # a warm start killed half-way: start it again
    print(f"warm start: behaviour cloning {config.warmstart.episodes} expert episodes", flush=True)
    result = warm_start(config, out, progress=config.logging.progress)
    before = result.get("held_out_greedy_match_before")
    after = result.get("held_out_greedy_match_after")
    if before is not None:
        print(
            f"warm start: held-out greedy step accuracy {before:.2f} -> {after:.2f} "
            f"({result['seconds']:.0f} s)",
            flush=True,
        )
    return str(Path(result["model"]).resolve())


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="behaviour cloning", unit="epoch")
