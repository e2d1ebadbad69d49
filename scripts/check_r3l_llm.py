"""Functional check of R^3L's LLM path (issue 18): the trainer with ``rollout.strategy=retry``,
``reflector="llm"``, credit ``r3l`` and loss ``opmd``; no learning claim.

    nice -n 19 .venv/bin/python scripts/check_r3l_llm.py --config scripts/configs/r3l_llm_check.yaml
    ... --reuse-warmstart DIR   # a finished warm start (DIR/warmstart.json, DIR/model) of the same
                                # model, env and warmstart options, instead of cloning again

Before each learner update the batch the trainer built is checked, and the figures are written
to ``<run>/r3l_check.json`` after every iteration (so a killed run keeps what it reached):

- reflections: one per base trajectory; how many were parsed, how many were invalid (each
  invalid text is kept), how many said "success" (no retry);
- retries: one per valid non-success report; each must start at its base's state after the
  pivot k: its first k steps hold the base's actions and response tokens, and its step k sees
  the base's step-k observation;
- masks: ``Advantages.mask`` must be False exactly on the first k steps of each retry and on the
  first max k steps of its base (R^3L's pivotal credit), True elsewhere;
- tokens: the learner's token mask must be 0 on every response token of a masked step and 1 on
  every other one when ``learner.prob_mask`` is off (R^3L has no probability mask); with it on,
  the extra zeros are counted separately.

Exit status 1 when any check fails, 0 otherwise (a run with no retry passes vacuously: see
``retries`` in the output).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.credit.trajectory import TrajectoryGroup
from creditgym.trainers.config import ConfigError, load_config
from creditgym.trainers.train import Trainer


def expected_mask(groups: list[TrajectoryGroup]) -> np.ndarray:
    """R^3L's pivotal mask, from the roles and pivots alone: a retry's first ``pivot`` steps and
    its base's first max-pivot steps are False; ``mc`` trajectories are False throughout."""
    out = []
    for g in groups:
        pivots: dict[Any, int] = {}
        for t in g.trajectories:
            if t.role == "retry" and t.pivot is not None:
                pivots[t.pair_id] = max(pivots.get(t.pair_id, 0), int(t.pivot))
        for t in g.trajectories:
            if t.role == "base":
                k = pivots.get(t.pair_id, 0)
            elif t.role in ("retry", "retry_guided"):
                k = int(t.pivot or 0)
            else:
                k = 0
            out.extend(t.role != "mc" and i >= k for i in range(len(t)))
    return np.asarray(out, dtype=bool)


def check_batch(
    learner: Any, groups: list[TrajectoryGroup], adv: Any, reflections: bool = True
) -> dict[str, Any]:
    """The figures of one iteration's batch (see the module docstring) and its failed checks.
    ``learner`` None skips the token checks; ``reflections`` False (the expert reflector) skips
    the one-reflection-per-base check."""
    failures: list[str] = []
    trajs = [t for g in groups for t in g.trajectories]
    bases = [t for t in trajs if t.role == "base"]
    reports = [t.info["reflection"] for t in bases if "reflection" in t.info]
    out: dict[str, Any] = {
        "trajectories": {
            r: sum(t.role == r for t in trajs) for r in sorted({t.role for t in trajs})
        },
        "base_success": float(np.mean([t.won for t in bases])) if bases else None,
        "reflections_requested": len(reports),
        "reflections_parsed": sum(bool(r["valid"]) for r in reports),
        "reflections_invalid": sum(not r["valid"] for r in reports),
        "invalid_reasons": [r.get("error") for r in reports if not r["valid"]],
        "invalid_texts": [r["text"] for r in reports if not r["valid"]],
        "parsed_texts": [r["text"] for r in reports if r["valid"]],
    }
    if reflections and len(reports) != len(bases):
        failures.append(f"{len(bases)} bases but {len(reports)} reflections")
    by_pair = {t.pair_id: t for t in bases}
    retries = [t for t in trajs if t.role == "retry"]
    pivots = []
    for r in retries:
        base, k = by_pair.get(r.pair_id), int(r.pivot)
        pivots.append(k)
        if base is None:
            failures.append(f"retry {r.pair_id} has no base")
            continue
        same_actions = [s.action for s in r.steps[:k]] == [s.action for s in base.steps[:k]]
        same_tokens = all(
            list(a.response_ids or []) == list(b.response_ids or [])
            for a, b in zip(r.steps[:k], base.steps[:k])
        )
        same_obs = len(r) > k and r.steps[k].observation == base.steps[k].observation
        if not (same_actions and same_tokens and same_obs):
            failures.append(
                f"retry {r.pair_id} pivot {k}: prefix actions {same_actions}, tokens "
                f"{same_tokens}, restored observation {same_obs}"
            )
    out["retries"] = len(retries)
    out["retry_pivots"] = pivots
    out["retry_success"] = float(np.mean([t.won for t in retries])) if retries else None

    mask = adv.step_mask()
    want = expected_mask(groups)
    out["steps"] = int(len(mask))
    out["masked_steps"] = int(np.sum(~mask))
    if not np.array_equal(mask, want):
        bad = np.flatnonzero(mask != want).tolist()
        failures.append(f"Advantages.mask differs from R^3L's pivotal mask at steps {bad[:20]}")

    # The learner's token mask over the prepared samples (after `prepare`, before the update).
    prepared = getattr(learner, "_prepared", None)
    samples = prepared[1] if prepared is not None else []
    weight = adv.step_weight()
    masked_tok = trained_tok = prob_masked_tok = 0
    for s in samples:
        tok_mask, _ = learner._token_mask_and_weight(s, mask, weight)
        for index, _step, off, k in s.parts:
            m = tok_mask[off : off + k]
            zeros = int((m == 0).sum())
            if not mask[index]:
                masked_tok += k
                if zeros != k:
                    failures.append(f"step {index} is masked but {k - zeros} of its tokens train")
            else:
                trained_tok += k - zeros
                prob_masked_tok += zeros
    threshold = getattr(getattr(learner, "config", None), "prob_mask", None)
    if threshold is None and prob_masked_tok:
        failures.append(f"{prob_masked_tok} tokens of unmasked steps are masked without prob_mask")
    expected_masked_tok = sum(
        len(step.response_ids or [])
        for step, m in zip((s for g in groups for t in g.trajectories for s in t.steps), mask)
        if not m
    )
    if learner is not None and masked_tok != expected_masked_tok:
        failures.append(f"{masked_tok} masked tokens in samples, {expected_masked_tok} expected")
    out.update(
        {
            "prob_mask": threshold,
            "masked_tokens": masked_tok,
            "trained_tokens": trained_tok,
            "prob_masked_tokens": prob_masked_tok,
            "advantages_of_retries": sorted(
                {round(float(a), 4) for a, t in _step_roles(groups, adv) if t == "retry"}
            ),
            "failures": failures,
        }
    )
    return out


def _step_roles(groups: list[TrajectoryGroup], adv: Any):
    roles = [t.role for g in groups for t in g.trajectories for _ in t.steps]
    return zip(adv.values, roles)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--reuse-warmstart", metavar="DIR", help="a finished warm start to reuse")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config, a.overrides)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg.rollout.strategy != "retry" or cfg.credit.name != "r3l":
        print("error: the check needs rollout.strategy=retry and credit.name=r3l", file=sys.stderr)
        return 2
    trainer = Trainer(cfg, argv=["scripts/check_r3l_llm.py", *(argv or sys.argv[1:])])
    folder = trainer.folder.path
    if a.reuse_warmstart:
        src = Path(a.reuse_warmstart)
        if not (src / "warmstart.json").is_file() or not (src / "model" / "config.json").is_file():
            print(f"error: {src} holds no finished warm start", file=sys.stderr)
            return 2
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "warmstart.json", folder / "warmstart.json.reused")
        trainer.folder.warmstart.symlink_to(src.resolve(), target_is_directory=True)
    report: dict[str, Any] = {"config": a.config, "overrides": a.overrides, "iterations": []}
    if a.reuse_warmstart:
        report["warmstart_reused"] = str(Path(a.reuse_warmstart).resolve())
    out = folder / "r3l_check.json"
    t0 = time.perf_counter()

    def write() -> None:
        report["wall_s"] = time.perf_counter() - t0
        folder.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))

    trainer.build()
    report["model"] = str(trainer.model_path)
    report["built_s"] = time.perf_counter() - t0
    write()
    real_update = trainer.learner.update

    def checked_update(groups, adv):  # observe the batch, then the real update
        try:
            figures = check_batch(trainer.learner, list(groups), adv)
        except Exception as exc:  # a bug in the check must not lose the run's batch
            figures = {"failures": [f"the check raised {type(exc).__name__}: {exc}"]}
        report["iterations"].append(figures)
        write()
        print("r3l check:", json.dumps({k: v for k, v in figures.items() if "texts" not in k}))
        result = real_update(groups, adv)
        figures["update"] = {k: float(v) for k, v in (result or {}).items()}
        write()
        return result

    trainer.learner.update = checked_update
    try:
        trainer.run()
    finally:
        trainer.close()
    metrics = [json.loads(line) for line in trainer.folder.metrics.read_text().splitlines()]
    keys = ("reflections", "reflection_invalid", "reflection_success", "retries", "retry_won")
    report["rollout_metrics"] = [
        {k: m.get(f"rollout/{k}") for k in (*keys, "success", "generated")} for m in metrics
    ]
    failures = [f for it in report["iterations"] for f in it["failures"]]
    report["ok"] = not failures
    write()
    print(f"r3l check: {'ok' if not failures else 'FAILED'}; report {out}")
    for f in failures:
        print("  -", f)
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
