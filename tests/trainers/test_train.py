"""The training loop end to end on the tiny random model: run folder, metrics, needs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from creditgym import credit
from creditgym.trainers.config import load_config
from creditgym.trainers.dump import load_dump, read_rows
from creditgym.trainers.logger import read_metrics
from creditgym.trainers.train import RunFolder, Trainer, group_seeds, load_run_config, train

TINY = [
    "model.name=tiny",
    "env.id=creditgym/KeyRooms-v0",
    "env.kwargs={level: small, max_steps: 2}",
    "agent.max_new_tokens=4",
    "agent.max_prompt_tokens=512",
    "rollout.tasks_per_iteration=2",
    "rollout.group_size=2",
    "learner.lr=1.0e-3",
    "learner.micro_batch_tokens=2048",
    "eval.tasks=2",
    "logging.tensorboard=false",
]


def tiny_config(tmp_path: Path, *extra: str):
    return load_config(None, [*TINY, f"run_dir={tmp_path / 'run'}", *extra])


@pytest.mark.slow
def test_train_writes_a_complete_run_folder(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "train.iterations=2", "eval.every=1")
    result = train(cfg, argv=["test"])
    run = RunFolder(result.run_dir)

    # The resolved config reloads to the same config.
    assert load_run_config(run.path) == cfg
    meta = json.loads(run.meta.read_text())
    assert len(meta["created"]["git"]["commit"] or "") in (0, 40)
    assert meta["created"]["panels"]["train"]["size"] == 2000
    assert len(meta["created"]["panels"]["eval"]["hash"]) == 16

    records = read_metrics(run.metrics)
    assert [r["iteration"] for r in records] == [0, 1, 2]
    assert "eval/success" in records[0] and "rollout/success" not in records[0]
    for r in records[1:]:
        for key in (
            "rollout/success",
            "credit/adv_std",
            "train/pg_loss",
            "train/kl",
            "eval/success",
        ):
            assert key in r, key
        assert r["rollout/episodes"] == 4
        phases = sum(
            r[f"time/{p}"] for p in ("generate", "env", "credit", "prepare", "update", "sync")
        )
        assert phases + r["time/bookkeeping"] == pytest.approx(r["time/iteration"], rel=1e-6)
        assert 0.0 <= r["time/overhead_frac"] <= 1.0

    # Every step of every iteration is dumped (schema 2) with its advantage, in advantage order,
    # and the credit module recomputed from the dump gives the dumped advantages.
    module = credit.make(cfg.credit.name, **cfg.credit.options)
    for k in (1, 2):
        rows = read_rows(run.trajectories(k))
        assert len(rows) == records[k]["rollout/steps"] == records[k]["credit/num_steps"]
        assert all(isinstance(row["advantage"], float) for row in rows)
        assert {r["schema_version"] for r in rows} == {2}
        assert {r["policy_version"] for r in rows} == {k}
        for r in rows:
            assert (
                len(r["response_token_ids"]) == len(r["sampler_logprobs"]) == r["response_tokens"]
            )
            assert len(r["entropies"]) == r["response_tokens"] > 0
        assert [(r["group"], r["trajectory"], r["step"]) for r in rows] == sorted(
            (r["group"], r["trajectory"], r["step"]) for r in rows
        )
        again = module(load_dump(run.trajectories(k)))
        assert again.values.tolist() == [r["advantage"] for r in rows]
    report = json.loads(run.eval_report(2).read_text())
    assert report["episodes"] == 2 and "success/small" in report and len(report["per_task"]) == 2
    assert (run.path / "learning_curve.png").stat().st_size > 1000
    assert (run.checkpoints / "latest").read_text() == "iter_000002"


@pytest.mark.slow
@pytest.mark.parametrize("module", ["empg", "ppo"])
def test_credit_needs_are_filled_by_the_learner(tmp_path: Path, module: str) -> None:
    """EMPG reads token entropies and PPO value estimates; both raise if the loop skipped them."""
    cfg = tiny_config(tmp_path, f"credit.name={module}", "eval.tasks=0", "train.iterations=1")
    trainer = Trainer(cfg, argv=["test"])
    try:
        trainer.build()
        record = trainer.iteration(1)
    finally:
        trainer.close()
    assert record["credit/num_steps"] == record["rollout/steps"] > 0
    assert record["train/optimizer_steps"] >= 2


def test_a_new_run_never_overwrites_an_old_one(tmp_path: Path) -> None:
    first = RunFolder.fresh(tmp_path / "demo")
    first.config.write_text("name: demo\n")
    second = RunFolder.fresh(tmp_path / "demo")
    assert second.path.name == "demo-2" and first.config.read_text() == "name: demo\n"


def test_resume_needs_an_existing_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run"):
        Trainer(tiny_config(tmp_path), run_dir=tmp_path / "nothing", resume=True)


def test_run_config_overrides_on_resume(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(cfg.to_yaml())
    extended = load_run_config(tmp_path / "run", {"train.iterations": 7})
    assert extended.train.iterations == 7 and extended.rollout == cfg.rollout
    data = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert data["train"]["iterations"] == cfg.train.iterations


def test_group_seeds_depend_only_on_run_seed_iteration_and_group() -> None:
    assert group_seeds(0, 3, 4) == group_seeds(0, 3, 4)
    assert len(set(group_seeds(0, 3, 4) + group_seeds(0, 4, 4) + group_seeds(1, 3, 4))) == 12
