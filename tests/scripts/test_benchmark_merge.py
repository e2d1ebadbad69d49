"""`benchmark_credit.py --merge`: folders made with the same settings combine into one summary."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "_bench_merge", ROOT / "scripts/benchmark_credit.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(out: Path, methods: str, iterations: int = 2, *extra: str) -> list[str]:
    return [
        "--env-kwargs", '{"level": "small"}', "--methods", methods, "--seeds", "2",
        "--iterations", str(iterations), "--groups", "2", "--group-size", "4", "--tasks", "2",
        "--eval-every", "1", "--eval-episodes", "2", "--fidelity-every", "1",
        "--dump-iterations", "none", "--workers", "1", "--out", str(out), *extra,
    ]  # fmt: skip


def _run(bench, out: Path, method: str, iterations: int = 2) -> dict:
    return bench.main(_args(out, method, iterations))


@pytest.mark.slow
def test_merge_equals_one_run_of_both_methods(tmp_path: Path) -> None:
    bench = _bench()
    a = _run(bench, tmp_path / "a", "grpo")
    b = _run(bench, tmp_path / "b", "gigpo")
    both = _run(bench, tmp_path / "both", "grpo,gigpo")
    merged = bench.merge([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "m")

    # seeded runs: each method's figures are the same whether it ran alone or beside the other
    def figures(summary: dict) -> dict:  # all but the credit module's timing
        return {
            m: {k: v for k, v in row.items() if k != "credit_ms_per_1k_steps"}
            for m, row in summary["methods"].items()
        }

    assert figures(merged) == figures(both)
    assert merged["methods"]["grpo"]["success_final"] == a["methods"]["grpo"]["success_final"]
    assert merged["methods"]["gigpo"]["fidelity"] == b["methods"]["gigpo"]["fidelity"]
    assert merged["config"]["equal_turns_budget"] == both["config"]["equal_turns_budget"]
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["merged_from"]
    assert "| gigpo |" in (tmp_path / "m" / "summary.md").read_text()

    _run(bench, tmp_path / "c", "rloo", iterations=3)
    with pytest.raises(SystemExit, match=r"differs from .* in \['iterations'\]"):
        bench.merge([str(tmp_path / "a"), str(tmp_path / "c")], tmp_path / "x")
    with pytest.raises(SystemExit, match="more than one folder"):
        bench.merge([str(tmp_path / "a"), str(tmp_path / "a")], tmp_path / "x")
    with pytest.raises(SystemExit, match="no summary.json"):
        bench.merge([str(tmp_path / "a"), str(tmp_path / "nowhere")], tmp_path / "x")


@pytest.mark.slow
def test_method_iterations_run_a_method_longer_and_count_its_own_iterations(tmp_path: Path):
    bench = _bench()
    alone = _run(bench, tmp_path / "alone", "gigpo", iterations=3)
    both = bench.main(_args(tmp_path / "both", "grpo,gigpo", 2, 'method_iterations={"gigpo": 3}'))
    runs = [json.loads(x) for x in (tmp_path / "both" / "runs.jsonl").read_text().splitlines()]
    assert {(r["method"], r["iterations"]) for r in runs} == {("grpo", 2), ("gigpo", 3)}
    for r in runs:  # evaluated after every iteration, up to the method's own last one
        assert r["curve"]["eval_iter"] == list(range(r["iterations"] + 1))
    g = both["methods"]["gigpo"]
    assert g["iterations"] == 3 and both["methods"]["grpo"]["iterations"] == 2
    assert g["success_final"] == alone["methods"]["gigpo"]["success_final"]
    assert g["turns_per_iteration"] == alone["methods"]["gigpo"]["turns_per_iteration"]
    assert both["config"]["equal_turns_budget"] == min(r["generated_turns"] for r in runs)
    assert "(gigpo: 3)" in (tmp_path / "both" / "summary.md").read_text()
    # a method with its own iterations, benchmarked in a folder of its own, merges with the rest
    _run(bench, tmp_path / "grpo", "grpo")
    bench.main(_args(tmp_path / "g3", "gigpo", 2, 'method_iterations={"gigpo": 3}'))
    merged = bench.merge([str(tmp_path / "grpo"), str(tmp_path / "g3")], tmp_path / "m")
    for m in ("grpo", "gigpo"):
        row = {k: v for k, v in merged["methods"][m].items() if k != "credit_ms_per_1k_steps"}
        assert row == {k: v for k, v in both["methods"][m].items() if k != "credit_ms_per_1k_steps"}
    assert merged["config"]["method_iterations"] == {"gigpo": 3}
    assert merged["config"]["equal_turns_budget"] == both["config"]["equal_turns_budget"]
    with pytest.raises(SystemExit):  # a method that is not benchmarked is a config error
        bench.main(["--methods", "grpo", 'method_iterations={"gigpo": 3}', "--out", str(tmp_path)])
