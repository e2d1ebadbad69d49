"""scripts/plot_epo.py: per-seed curves and each arm's mean over its seeds."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(folder: Path, rows: list[tuple[int, float, float]]) -> Path:
    folder.mkdir()
    lines = [json.dumps({"iteration": 0, "eval/success": 0.0})]
    for it, ent, succ in rows:
        lines.append(
            json.dumps({"iteration": it, "train/old_entropy": ent, "rollout/success": succ})
        )
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_plot_epo_draws_seeds_and_the_mean_over_common_iterations(tmp_path, capsys):
    script = runpy.run_path(str(ROOT / "scripts" / "plot_epo.py"))
    b0 = _run(tmp_path / "gigpo_s0", [(1, 0.8, 0.0), (2, 0.6, 0.5)])
    b1 = _run(tmp_path / "gigpo_s1", [(1, 0.4, 0.25), (2, 0.2, 0.75), (3, 0.1, 1.0)])
    e0 = _run(tmp_path / "epo_s0", [(1, 0.9, 0.125)])
    out = tmp_path / "fig" / "epo.png"
    report = script["main"](["--baseline", str(b0), str(b1), "--epo", str(e0), "--out", str(out)])
    assert out.stat().st_size > 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))
    # Iteration 0 (eval only) is not a training point; gigpo_s1's iteration 3 has no partner.
    assert report["runs"][str(b1)]["train/old_entropy"] == [(1, 0.4), (2, 0.2), (3, 0.1)]
    base = report["means"]["baseline"]
    # entropy: (0.8 + 0.4) / 2 = 0.6 and (0.6 + 0.2) / 2 = 0.4
    assert [x for x, _ in base["train/old_entropy"]] == [1, 2]
    assert [round(y, 12) for _, y in base["train/old_entropy"]] == [0.6, 0.4]
    # success: (0 + 0.25) / 2 = 0.125 and (0.5 + 0.75) / 2 = 0.625
    assert [y for _, y in base["rollout/success"]] == [0.125, 0.625]
    # One EPO run: its mean is itself.
    assert report["means"]["EPO"]["rollout/success"] == [(1, 0.125)]
