"""Reading what the viewer shows from a folder: a training run or a `benchmark_credit.py` output.

A training run (``config.yaml`` + ``trajectories/iter_<k>.jsonl``) gives the trained credit
method and its options from the config, the dumped advantages, and, when the env has a finite
model (KeyRooms' ``model()``), the optimal policy's advantage A*(s, a) as the reference: the
LLM's own A^pi is not computable. A benchmark folder (``summary.json`` +
``trajectories/<method>/seed_<s>/iter_<k>.jsonl``, written with ``--dump-iterations``) carries the
exact A^pi of the tabular policy that acted, per step, in the dump.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.credit.trajectory import TrajectoryGroup, flat_steps
from creditgym.trainers.dump import load_dump, read_rows
from creditgym.trainers.viewer.payload import ViewInput

__all__ = ["BENCH_DUMPS", "SourceError", "benchmark_dump_path", "load_source", "optimal_advantages"]

#: Where a benchmark folder keeps its dumps, below the folder.
BENCH_DUMPS = "trajectories"
_ITER = re.compile(r"iter_(\d+)\.jsonl$")


class SourceError(ValueError):
    """The folder is not a run or benchmark folder, or lacks what was asked for."""


def benchmark_dump_path(out: str | Path, method: str, seed: int, iteration: int) -> Path:
    """The dump file of one (method, seed, iteration) of a benchmark folder."""
    return Path(out) / BENCH_DUMPS / method / f"seed_{seed}" / f"iter_{iteration:06d}.jsonl"


def _iterations(folder: Path) -> dict[int, Path]:
    out = {}
    for p in folder.glob("iter_*.jsonl"):
        m = _ITER.search(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


def _pick_iteration(folder: Path, iteration: int | None) -> tuple[int, Path]:
    found = _iterations(folder)
    if not found:
        raise SourceError(f"{folder} holds no iter_<k>.jsonl dumps")
    if iteration is None:
        k = max(found)
        return k, found[k]
    if iteration not in found:
        raise SourceError(f"no dump of iteration {iteration} in {folder}; dumped: {sorted(found)}")
    return iteration, found[iteration]


def _column(rows: list[dict[str, Any]], name: str) -> np.ndarray:
    return np.array(
        [np.nan if r.get(name) is None else float(r[name]) for r in rows], dtype=np.float64
    )


def _token_advantages(rows: list[dict[str, Any]]) -> list[list[float] | None]:
    """Per-token advantages as trained on: span-routed where dumped, else the step's advantage."""
    out = []
    for r in rows:
        if r.get("token_advantages") is not None:
            out.append(r["token_advantages"])
        elif r.get("advantage") is not None and r.get("response_token_ids"):
            out.append([float(r["advantage"])] * len(r["response_token_ids"]))
        else:
            out.append(None)
    return out


def _tokenizer_decoder(model_name: str) -> tuple[Callable[[Sequence[int]], list[str]] | None, str]:
    """One text piece per token id from the run's tokenizer (local files only)."""
    try:
        from transformers import AutoTokenizer

        from creditgym.agents.models import resolve_model

        tok = AutoTokenizer.from_pretrained(resolve_model(model_name), local_files_only=True)
    except Exception as exc:  # any failure only costs the token texts; ids are still shown
        return None, f"token texts unavailable ({type(exc).__name__}: {exc}); showing ids"
    return (lambda ids: [tok.decode([int(i)]) for i in ids]), ""


def optimal_advantages(
    env_id: str, env_kwargs: dict[str, Any], groups: Sequence[TrajectoryGroup], gamma: float = 0.95
) -> tuple[np.ndarray | None, str]:
    """A*(s, a) = Q*(s, a) - V*(s) of each step on its task's finite model (NaN off the model).

    Returns (None, reason) when the env has no finite model.
    """
    import gymnasium

    from creditgym import envs  # noqa: F401  (registers the envs)

    made: dict[str, Any] = {}
    models: dict[str, Any] = {}

    def model_of(task_id: str):
        if task_id in models:
            return models[task_id]
        for split in ("train", "valid", "test"):
            if split not in made:
                made[split] = gymnasium.make(env_id, split=split, **env_kwargs).unwrapped
            env = made[split]
            ids = list(env.panel.ids)
            if task_id in ids:
                env.reset(seed=0, options={"task_id": ids.index(task_id)})
                models[task_id] = env.model()
                return models[task_id]
        raise KeyError(f"task {task_id!r} is in none of {env_id}'s panels")

    out = np.full(sum(g.num_steps for g in groups), np.nan)
    try:
        pos = 0
        for group in groups:
            for traj in group.trajectories:
                model = model_of(traj.task_id or group.task_id)
                if not hasattr(model, "_viewer_a_star"):
                    v = model.optimal_values(gamma)
                    q = model.flat_reward + gamma * np.where(
                        model.terminal[model.flat_next], 0.0, v[model.flat_next]
                    )
                    model._viewer_a_star = q - v[model.flat_state]
                a_star = model._viewer_a_star
                for step in traj.steps:
                    s = model.index.get(step.state_key)
                    if s is not None:
                        acts = model.actions[s]
                        if step.action in acts:
                            out[pos] = a_star[model.offsets[s] + acts.index(step.action)]
                    pos += 1
    except (NotImplementedError, AttributeError) as exc:
        return None, f"{env_id} has no finite model ({exc})"
    except KeyError as exc:
        return None, str(exc)
    finally:
        for env in made.values():
            env.close()
    return out, ""


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def load_source(
    folder: str | Path,
    iteration: int | None = None,
    run: str | None = None,
    reference: bool = True,
    tokens: bool = True,
) -> ViewInput:
    """The `ViewInput` of one iteration of a run folder or benchmark folder.

    ``iteration``: the dumped iteration (default: the last). ``run``: for a benchmark folder,
    ``METHOD`` or ``METHOD/SEED`` (default: its first method, seed 0). ``reference``: compute A*
    for a run whose env has a finite model. ``tokens``: decode token texts with the run's
    tokenizer.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder")
    if (folder / "config.yaml").is_file() and (folder / "trajectories").is_dir():
        return _load_run(folder, iteration, reference, tokens)
    if (folder / "summary.json").is_file() and (folder / BENCH_DUMPS).is_dir():
        return _load_benchmark(folder, iteration, run)
    raise SourceError(
        f"{folder} is neither a training run (config.yaml + trajectories/) nor a benchmark folder "
        "(summary.json + trajectories/, from benchmark_credit.py --dump-iterations)"
    )


def _load_run(folder: Path, iteration: int | None, reference: bool, tokens: bool) -> ViewInput:
    cfg = _read_yaml(folder / "config.yaml")
    k, path = _pick_iteration(folder / "trajectories", iteration)
    rows = read_rows(path)
    groups = load_dump(path)
    credit_cfg = cfg.get("credit") or {}
    trained = credit_cfg.get("name")
    env_cfg = cfg.get("env") or {}
    env_id = env_cfg.get("id") or (groups[0].env_id if groups else "")
    data = ViewInput(
        groups=groups,
        iteration=k,
        source=str(folder),
        kind="run",
        env_id=env_id,
        trained=trained,
        method_options={trained: dict(credit_cfg.get("options") or {})} if trained else {},
        policy_version=[r.get("policy_version") for r in rows],
        dumped=_column(rows, "advantage"),
        token_advantages=_token_advantages(rows),
    )
    if tokens and any(s.response_ids for s in flat_steps(groups)):
        data.decode, note = _tokenizer_decoder((cfg.get("model") or {}).get("name", ""))
        data.run_label = "training run" + (f" · {note}" if note else "")
    if reference:
        ref, reason = optimal_advantages(env_id, dict(env_cfg.get("kwargs") or {}), groups)
        data.reference = ref
        data.reference_short = "A* (optimal)"
        data.reference_label = (
            "A*(s,a) = Q*(s,a) − V*(s) of the optimal policy on the task's exact model "
            "(γ = 0.95), not the LLM's own A^π"
        )
        data.reference_reason = reason
    return data


def _load_benchmark(folder: Path, iteration: int | None, run: str | None) -> ViewInput:
    summary = json.loads((folder / "summary.json").read_text())
    cfg = summary.get("config") or {}
    dumps = folder / BENCH_DUMPS
    methods = [p.name for p in sorted(dumps.iterdir()) if p.is_dir()]
    if not methods:
        raise SourceError(f"{dumps} holds no per-method dumps")
    order = [m for m in cfg.get("methods", []) if m in methods] + [
        m for m in methods if m not in cfg.get("methods", [])
    ]
    method, seed = order[0], 0
    if run:
        method, _, s = run.partition("/")
        if method not in methods:
            raise SourceError(f"benchmark run {method!r} not dumped; dumped methods: {order}")
        if s:
            try:
                seed = int(s.removeprefix("seed_").removeprefix("seed"))
            except ValueError as exc:
                raise SourceError(f"--run {run!r}: the seed must be an integer") from exc
    seed_dir = dumps / method / f"seed_{seed}"
    if not seed_dir.is_dir():
        seeds = sorted(p.name for p in (dumps / method).iterdir())
        raise SourceError(f"no dumps of {method} seed {seed}; dumped: {seeds}")
    k, path = _pick_iteration(seed_dir, iteration)
    rows = read_rows(path)
    groups = load_dump(path)
    ref = _column(rows, "reference_advantage") if rows else None
    kinds = {r.get("reference_kind") for r in rows if r.get("reference_kind")}
    has_ref = ref is not None and np.isfinite(ref).any()
    return ViewInput(
        groups=groups,
        iteration=k,
        source=str(folder),
        kind="benchmark",
        env_id=cfg.get("env", ""),
        trained=method,
        method_options={m: dict(o) for m, o in (cfg.get("method_options") or {}).items()},
        scale=cfg.get("adv_scale", "none") if cfg.get("adv_scale") in ("rms", "none") else "none",
        policy_version=[r.get("policy_version") for r in rows],
        dumped=_column(rows, "advantage"),
        reference=ref if has_ref else None,
        reference_short="A^π (exact)",
        reference_label=(next(iter(kinds)) if kinds else "exact A^π")
        + " of the tabular policy that sampled the batch",
        reference_reason="" if has_ref else "this dump has no reference_advantage",
        run_label=f"benchmark (tabular) · {method} seed {seed}",
    )
