"""scripts/gpu_check.sh on the CPU fallback: one JSON line with every documented field."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
#: The top-level fields the README's "GPU check" section documents.
FIELDS = {
    "schema", "device", "device_name", "python", "torch", "transformers", "cuda", "layers",
    "errors", "packing", "update", "memory", "seconds", "ok",
}  # fmt: skip


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """SmolLM2's config and tokenizer files (what the bundle's smollm2/ holds)."""
    from creditgym.agents.models import resolve_model

    src, out = Path(resolve_model("smollm2-135m")), tmp_path_factory.mktemp("smollm2")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(src / name, out / name)
    return out


@pytest.mark.slow
def test_cpu_fallback_prints_one_json_summary(assets) -> None:
    cmd = ["bash", str(SCRIPT), "--no-install", "--python", sys.executable, "--assets", str(assets)]
    cmd += ["--device", "cpu", "--layers", "1", "--tokens", "512", "--samples", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr[-3000:]
    summary = json.loads(lines[0])
    assert summary.keys() >= FIELDS
    assert summary["device"] == "cpu" and summary["cuda"] is None and summary["layers"] == 1
    assert summary["errors"] == [], summary["errors"]
    pack = summary["packing"]
    assert pack["pass"] and pack["tokens_packed"] < pack["tokens_unpacked"]
    upd, mem = summary["update"], summary["memory"]
    assert upd["dtype"] == "bfloat16" and upd["gradient_checkpointing"] and upd["loss_finite"]
    assert upd["trained_tokens"] == 4 * 32 and upd["update_tokens_per_s"] > 0
    est = mem["estimate"]
    assert est["total"] == sum(
        est[k] for k in ("parameters", "reference", "gradients", "optimizer",
                         "activations_per_micro_batch")
    )  # fmt: skip
    assert mem["max_allocated"] is None  # measured on CUDA only
    assert summary["ok"] and proc.returncode == 0


def test_without_a_bundle_it_says_how_to_build_one(tmp_path) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--bundle", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "make gpu-check-bundle" in proc.stderr


@pytest.mark.slow
def test_missing_assets_exit_2(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--assets", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "has no config.json" in proc.stderr
