"""scripts/select_tasks.py: ARPO's task filter writes a kept panel with its own hash."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from creditgym.envs.base import Panel

ROOT = Path(__file__).resolve().parents[2]


def test_select_tasks_writes_the_kept_panel(tmp_path, capsys):
    script = runpy.run_path(str(ROOT / "scripts" / "select_tasks.py"))
    assert script["parse_keep"]("min_successes=1, max_successes=3") == {
        "min_successes": 1,
        "max_successes": 3,
    }
    with pytest.raises(ValueError, match="min_successes"):
        script["parse_keep"]("min_wins=1")
    out = tmp_path / "panel.json"
    args = ["--env", "creditgym/KeyRooms-v0", "--env-kwargs", '{"level": "small"}']
    report = script["main"](
        [*args, "--tasks", "4", "--trials", "3", "--beta", "4", "--out", str(out)]
    )
    assert json.loads(capsys.readouterr().out.strip()) == report
    panel = Panel.load(out)
    wins = report["successes"]
    assert list(panel.ids) == [t for t, w in wins.items() if w >= 1]
    assert report["kept_hash"] == panel.hash
    assert (report["kept_hash"] != report["full_hash"]) == (len(panel) < 4)
    # at most 0 wins keeps exactly the complement
    none = tmp_path / "none.json"
    rest = script["main"]([*args, "--tasks", "4", "--trials", "3", "--beta", "4", "--keep",
                           "max_successes=0", "--out", str(none)]) if any(
        w == 0 for w in wins.values()
    ) else None  # fmt: skip
    if rest is not None:
        assert set(Panel.load(none).ids) == {t for t, w in wins.items() if w == 0}
