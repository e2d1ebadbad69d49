"""scripts/warmstart.py: its flags are sugar for ``warmstart.*`` overrides of the config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (
    "model: {name: tiny}\n"
    "env: {kwargs: {level: small, max_steps: 12}}\n"
    "agent: {history_length: 1, response_prefix: '<action>'}\n"
    "logging: {progress: false}\n"
)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "warmstart.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_no_episodes_and_bad_keys_are_one_line_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    proc = _run("--config", str(cfg), "--out", str(tmp_path / "bc"))
    assert proc.returncode == 2 and "warmstart.episodes is 0" in proc.stderr
    proc = _run("--config", str(cfg), "--out", str(tmp_path / "bc"), "warmstart.epoch=2")
    assert proc.returncode == 2 and "did you mean warmstart.epochs" in proc.stderr
    proc = _run("--config", str(cfg), "--out", str(tmp_path / "bc"), "--epochs", "0")
    assert proc.returncode == 2 and "warmstart.epochs" in proc.stderr


@pytest.mark.slow
def test_flags_overrides_and_the_config_section_combine(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG + "warmstart: {episodes: 1, mini_batches: 2}\n")
    out = tmp_path / "bc"
    # --episodes overrides the file's 1; epochs comes from an override, mini_batches from the
    # file, lr from WarmstartConfig's default.
    proc = _run(
        "--config", str(cfg), "--out", str(out), "--episodes", "2", "--eval-episodes", "0",
        "warmstart.epochs=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "warmstart.json").read_text())
    assert report["demonstrations"]["episodes"] == 2
    assert report["epochs"] == 2 and [h["epoch"] for h in report["history"]] == [1, 2]
    assert report["mini_batches"] == 2 and report["lr"] == pytest.approx(2e-4)
