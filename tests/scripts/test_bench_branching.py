"""scripts/bench_branching.py: the restore-cost table (run in-process on the cheap envs)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_branching_prints_a_row_per_env(capsys):
    bench = runpy.run_path(str(ROOT / "scripts" / "bench_branching.py"))
    rows = bench["main"](["--only", "KeyRooms medium", "ALFWorld fast", "--repeats", "2"])
    assert [label for label, _ in rows] == ["KeyRooms medium", "ALFWorld fast"]
    for _, r in rows:
        assert r["branching"] == "snapshot" and r["native_ms"] > 0 and r["replay_ms"] > 0
        assert r["depth"] == 10 and r["native_bytes"] > 0
    out = capsys.readouterr().out
    assert out.count("\n| KeyRooms medium | snapshot | 10 |") == 1 and "| ALFWorld fast |" in out
    with pytest.raises(SystemExit):
        bench["main"](["--only", "Nowhere"])
