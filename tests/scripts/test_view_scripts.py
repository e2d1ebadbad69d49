"""benchmark_credit.py --dump-iterations and scripts/view.py, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from creditgym.trainers.dump import load_dump, read_rows
from creditgym.trainers.viewer import build_payload, load_source

pytestmark = pytest.mark.slow  # five script runs, about 25 s

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_benchmark_dumps_exact_advantages_and_view_reads_them(tmp_path):
    out = tmp_path / "bench"
    run = _run(
        "scripts/benchmark_credit.py", "--env-kwargs", '{"level": "small"}',
        "--methods", "grpo,gigpo", "--seeds", "1", "--iterations", "3", "--groups", "2",
        "--group-size", "4", "--eval-every", "3", "--eval-episodes", "1", "--workers", "1",
        "--dump-iterations", "0,2,7", "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    files = sorted(p.relative_to(out).as_posix() for p in out.glob("trajectories/*/*/*.jsonl"))
    assert files == [
        f"trajectories/{m}/seed_0/iter_{k:06d}.jsonl" for m in ("gigpo", "grpo") for k in (0, 2)
    ]  # iteration 7 is past the run's 3 iterations
    path = out / files[0]
    rows = read_rows(path)
    assert len(rows) == sum(g.num_steps for g in load_dump(path))
    # A tabular agent only takes the model's actions: every step has its exact A^pi.
    assert all(r["reference_advantage"] is not None for r in rows)
    assert {r["reference_kind"] for r in rows} == {"exact A^π (γ = 0.95)"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["dump_iterations"] == [0, 2]

    data = load_source(out, run="gigpo/0", iteration=2)
    payload = build_payload(data, ["grpo", "gigpo", "salt"])
    assert payload["meta"]["check"]["ok"], payload["meta"]["check"]
    ref = np.array(payload["reference"]["values"])
    assert np.allclose(
        ref, [r["reference_advantage"] for r in read_rows(out / files[1])], atol=1e-4
    )

    page = tmp_path / "view.html"
    view = _run("scripts/view.py", str(out), "--run", "grpo", "--out", str(page))
    assert view.returncode == 0, view.stderr[-2000:]
    assert "iteration 2" in view.stdout and page.stat().st_size > 10_000
    bad = _run("scripts/view.py", str(out), "--methods", "gigpo,nope", "--out", str(page))
    assert bad.returncode == 2 and "unknown credit methods ['nope']" in bad.stderr
    missing = _run("scripts/view.py", str(tmp_path), "--out", str(page))
    assert missing.returncode == 2 and "neither a training run" in missing.stderr
    bad_flag = _run("scripts/benchmark_credit.py", "--dump-iterations", "1,x", "--out", str(out))
    assert bad_flag.returncode == 2 and "dump_iterations" in bad_flag.stderr
