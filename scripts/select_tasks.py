"""Filter a train panel by the base policy's results (ARPO's task selection) and write it.

    python scripts/select_tasks.py --env creditgym/SearchDiscrete-v0 --tasks 64 --trials 16 \
        --keep min_successes=1 --out runs/search_selected_panel.json

ARPO (arXiv 2505.16282) trains on the tasks its base policy solves at least once over repeated
trials (and drops infeasible ones). Here the base policy is the tabular start policy the credit
benchmark uses without a model: the expert prior (`ExpertPriorTabularAgent`, logit ``--beta`` on
the expert's action; ``--beta 0`` is the uniform policy). Each of the first ``--tasks`` train
tasks is played ``--trials`` times (reset seeds 30_000 + task index); ``--keep`` takes
``min_successes=K`` (at least K wins) and/or ``max_successes=K`` (at most K: drop tasks already
mastered), comma-separated. The kept ids go to ``--out`` as a `Panel` file (env, split,
generator version, ids, and its own hash, different from the full panel's), and the script
prints one JSON line: both hashes, the counts and the per-task successes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from creditgym import envs  # noqa: F401  (registers the envs)
from creditgym.agents.expert_prior import ExpertPriorTabularAgent
from creditgym.envs.base import Panel
from creditgym.trainers.rollout import EnvPool, collect

KEEP_KEYS = ("min_successes", "max_successes")


def parse_keep(text: str) -> dict[str, int]:
    """``"min_successes=1,max_successes=15"`` -> dict; unknown keys are an error."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in KEEP_KEYS or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"--keep: {part!r} is not one of {list(KEEP_KEYS)}=INT")
        out[key] = int(value)
    if not out:
        raise ValueError("--keep needs at least one rule")
    return out


def select(env_id: str, env_kwargs: dict, tasks: int, trials: int, keep: dict, beta: float):
    """Play each task ``trials`` times; return (full panel, kept panel, successes per task)."""
    pool = EnvPool(env_id, trials, split="train", env_kwargs=env_kwargs)
    try:
        n = min(tasks, len(pool.panel))
        agent = ExpertPriorTabularAgent(beta, seed=0)
        wins = []
        for i in range(n):
            batch = collect(pool, agent, [i], trials, [30_000 + i])
            wins.append(sum(int(t.won) for g in batch.groups for t in g.trajectories))
        full = Panel(pool.env_id, "train", pool.panel.version, tuple(pool.panel.ids[:n]))
    finally:
        pool.close()
    lo, hi = keep.get("min_successes", 0), keep.get("max_successes", trials)
    kept = tuple(tid for tid, w in zip(full.ids, wins) if lo <= w <= hi)
    return full, Panel(full.env, "train", full.version, kept), wins


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", required=True)
    p.add_argument("--env-kwargs", default="{}", help="JSON keyword arguments of the env")
    p.add_argument("--tasks", type=int, default=64, help="first N train tasks to consider")
    p.add_argument("--trials", type=int, default=16, help="episodes per task (ARPO: 16)")
    p.add_argument("--keep", default="min_successes=1", help="rules, e.g. min_successes=1")
    p.add_argument("--beta", type=float, default=1.0, help="expert-prior logit of the base policy")
    p.add_argument("--out", required=True, help="where to write the kept panel (JSON)")
    a = p.parse_args(argv)
    try:
        keep = parse_keep(a.keep)
        if a.tasks < 1 or a.trials < 1:
            raise ValueError("--tasks and --trials must be >= 1")
    except ValueError as exc:
        p.error(str(exc))
    full, kept, wins = select(a.env, json.loads(a.env_kwargs), a.tasks, a.trials, keep, a.beta)
    if not kept.ids:
        print("error: no task passes the rules; nothing written", file=sys.stderr)
        raise SystemExit(1)
    path = kept.save(Path(a.out))
    report = {
        "env": full.env,
        "full_hash": full.hash,
        "kept_hash": kept.hash,
        "considered": len(full),
        "kept": len(kept),
        "trials": a.trials,
        "keep": keep,
        "beta": a.beta,
        "successes": dict(zip(full.ids, wins)),
        "out": str(path),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
