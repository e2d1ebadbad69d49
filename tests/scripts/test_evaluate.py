"""scripts/evaluate.py on the tiny model: a JSON report with per-type success and the panel hash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_evaluate_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = _run(
        "--model", "tiny", "--env", "creditgym/KeyRooms-v0",
        "--env-kwargs", '{"level": "small", "max_steps": 2}',
        "--panel", "test", "--tasks", "3", "--max-new-tokens", "4", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["tasks"] == 3 and len(report["per_task"]) == 3
    assert report["panel"] == "test" and len(report["panel_hash"]) == 16
    assert 0.0 <= report["success"] <= 1.0 and "success/small" in report
    assert all(tid.startswith("small-") for tid in report["per_task"])
    assert json.loads(proc.stdout.strip().splitlines()[-1])["success"] == report["success"]


def test_evaluate_rejects_bad_arguments() -> None:
    proc = _run("--model", "tiny", "--env", "creditgym/KeyRooms-v0", "--env-kwargs", "[1]")
    assert proc.returncode == 2 and "JSON object" in proc.stderr
    proc = _run("--model", "tiny")
    assert proc.returncode == 2 and "--env (or --config) is required" in proc.stderr
    proc = _run("--run", "runs/x", "--config", "scripts/configs/demo.yaml")
    assert proc.returncode == 2 and "--config goes with --model" in proc.stderr
    proc = _run("--model", "tiny", "--env", "creditgym/KeyRooms-v0", "--start")
    assert proc.returncode == 2 and "--start needs --run" in proc.stderr
    # Flags and overrides go through the config loader: registry names, nearest keys.
    proc = _run("--model", "tiny", "--env", "creditgym/KeyRooms-v0", "--backend", "tgi")
    assert proc.returncode == 2 and "unknown backend 'tgi'" in proc.stderr
    assert "registered: [" in proc.stderr and "'hf'" in proc.stderr
    proc = _run("--model", "tiny", "--env", "creditgym/KeyRooms-v0", "agent.temprature=0.5")
    assert proc.returncode == 2 and "did you mean agent.temperature" in proc.stderr
    proc = _run("--model", "tiny", "--env", "creditgym/KeyRooms-v0", "--output-format", "json")
    assert proc.returncode == 2 and "agent.output_format" in proc.stderr


@pytest.mark.slow
def test_evaluate_a_run_before_and_after_training(tmp_path: Path) -> None:
    from creditgym.trainers.train import train
    from tests.trainers.test_train import tiny_config

    run = train(tiny_config(tmp_path, "train.iterations=1", "eval.tasks=0"), argv=["t"]).run_dir
    reports = {}
    for flag in ("--start", None):
        proc = _run("--run", str(run), "--tasks", "2", *([flag] if flag else []))
        assert proc.returncode == 0, proc.stderr
        name = "valid_start.json" if flag else "valid.json"
        reports[flag] = json.loads((Path(run) / "eval" / name).read_text())
    assert reports["--start"]["model"].endswith("(iteration 0)")
    assert reports[None]["model"].endswith("(iteration 1)")
    assert reports["--start"]["panel_hash"] == reports[None]["panel_hash"]


@pytest.mark.slow
def test_evaluate_takes_agent_and_env_settings_from_a_config(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "env: {id: creditgym/KeyRooms-v0, kwargs: {level: small, max_steps: 2}}\n"
        "agent: {response_prefix: '<action>', max_new_tokens: 3, history_length: 0}\n"
    )
    out = tmp_path / "report.json"
    proc = _run("--model", "tiny", "--config", str(cfg), "--tasks", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["env_kwargs"] == {"level": "small", "max_steps": 2}
    assert report["agent"]["response_prefix"] == "<action>"
    assert report["agent"]["max_new_tokens"] == 3 and report["config"] == str(cfg)
    # Trailing overrides and flag sugar change the same keys, on top of the config.
    proc = _run(
        "--model", "tiny", "--config", str(cfg), "--tasks", "2", "--out", str(out),
        "--history-length", "1", "agent.max_new_tokens=2", "env.kwargs.max_steps=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["env_kwargs"] == {"level": "small", "max_steps": 1}
    assert report["agent"]["max_new_tokens"] == 2 and report["agent"]["history_length"] == 1
    assert report["agent"]["response_prefix"] == "<action>" and report["seed"] == 1234
