"""The trajectory dump (schema 2): written rows read back into groups that give the same credit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup, flat_steps
from creditgym.trainers.dump import (
    FIELDS,
    SCHEMA_VERSION,
    DumpSchemaError,
    load_dump,
    read_rows,
    token_advantages,
    trajectory_rows,
)
from creditgym.trainers.run_folder import RunFolder

#: Token spans of a 9-token HiPER response: <switch>, <subgoal>, <action>.
SPANS = {"switch": [(0, 2)], "subgoal": [(2, 5)], "action": [(5, 9)]}


def _groups(seed: int = 0) -> list[TrajectoryGroup]:
    """Two groups of three hand-written trajectories with shared states, HiPER output, values,
    entropies and IGPO's answer log-probs: everything the credit modules below read."""
    rng = np.random.default_rng(seed)
    groups = []
    for g in range(2):
        trajs = []
        for i in range(3):
            steps = []
            length = 2 + (i + g) % 2
            for t in range(length):
                last = t == length - 1
                switch = "SWITCH" if t == 0 or rng.random() < 0.4 else "KEEP"
                answer = "paris" if (i + g) % 2 == 0 else "rome"
                action = f"<answer>{answer}</answer>" if last else f"go {rng.integers(2)}"
                steps.append(
                    Step(
                        state_key=f"g{g}-s{t}-{int(rng.integers(2))}",
                        action=action,
                        reward=float(last and answer == "paris"),
                        valid=bool(rng.random() < 0.8),
                        next_state_key=f"g{g}-s{t + 1}",
                        observation=f"room {t}",
                        admissible_actions=["go 0", "go 1"],
                        text=f"<switch>{switch}</switch><subgoal>find</subgoal>{action}",
                        terminated=last,
                        info={"ground_truth": "paris", "won": False, "score": 0.5},
                        prompt_ids=list(range(7)),
                        response_ids=[int(x) for x in rng.integers(0, 100, 9)],
                        sampler_logprobs=rng.normal(-1.0, 0.3, 9).tolist(),
                        spans=SPANS,
                        entropies=rng.random(9),
                        values={k: float(rng.normal()) for k in ("high", "low", "term")},
                        answer_logprob_before=None if last else float(rng.normal(-3, 1)),
                        answer_logprob_after=None if last else float(rng.normal(-2, 1)),
                        extras={"parsed": {"switch": switch, "subgoal": "find"}},
                    )
                )
            won = steps[-1].reward > 0
            trajs.append(
                Trajectory(steps, task_id=f"task{g}", seed=10 + g, won=won, task_type="small")
            )
        groups.append(TrajectoryGroup(trajs, task_id=f"task{g}", seed=10 + g, env_id="demo"))
    return groups


def _dump(tmp_path: Path, groups, advantages, iteration: int = 3) -> Path:
    folder = RunFolder(tmp_path)
    path = folder.trajectories(iteration)
    folder.write_jsonl(path, trajectory_rows(iteration, groups, advantages))
    return path


@pytest.mark.parametrize("name", ["gigpo", "hiper", "empg", "igpo", "grpo"])
def test_credit_recomputed_from_the_dump_matches_the_dumped_advantages(
    tmp_path: Path, name: str
) -> None:
    groups = _groups()
    module = credit.make(name)
    adv = module(groups)
    path = _dump(tmp_path, groups, adv)

    rows = read_rows(path)
    assert [r["advantage"] for r in rows] == [float(v) for v in adv.values]
    again = module(load_dump(path))
    np.testing.assert_array_equal(again.values, adv.values)
    for span, values in (adv.spans or {}).items():
        np.testing.assert_array_equal(again.spans[span], values)
        assert [r["span_advantages"][span] for r in rows] == [float(v) for v in values]


def test_every_row_carries_every_field_and_the_steps_round_trip(tmp_path: Path) -> None:
    groups = _groups(seed=1)
    adv = credit.make("hiper")(groups)
    path = _dump(tmp_path, groups, adv, iteration=5)
    rows = read_rows(path)
    assert all(list(r) == list(FIELDS) for r in rows)
    assert {r["schema_version"] for r in rows} == {SCHEMA_VERSION}
    assert {r["iteration"] for r in rows} == {5} == {r["policy_version"] for r in rows}

    loaded = load_dump(path)
    assert [len(g) for g in loaded] == [len(g) for g in groups]
    assert [g.env_id for g in loaded] == ["demo", "demo"]
    for a, b in zip(flat_steps(groups), flat_steps(loaded)):
        for field in ("state_key", "action", "reward", "valid", "text", "observation", "info"):
            assert getattr(a, field) == getattr(b, field), field
        assert list(a.response_ids) == list(b.response_ids)
        assert list(a.sampler_logprobs) == list(b.sampler_logprobs)
        np.testing.assert_array_equal(a.entropies, b.entropies)
        assert a.values == b.values and a.spans == b.spans and a.extras == b.extras
        assert a.answer_logprob_before == b.answer_logprob_before
        assert b.prompt_ids is None and b.policy_version == 5

    # HiPER routes its span advantages onto the tokens of each span.
    row = rows[0]
    expected = [row["span_advantages"]["switch"]] * 2 + [row["span_advantages"]["subgoal"]] * 3
    expected += [row["span_advantages"]["action"]] * 4
    assert row["token_advantages"] == expected
    assert row["advantage_mask"] is None and row["advantage_weight"] is None


def test_a_step_keeps_the_policy_version_that_sampled_it(tmp_path: Path) -> None:
    groups = _groups()
    for step in flat_steps(groups)[:3]:
        step.policy_version = 1
    rows = trajectory_rows(4, groups, None)
    assert [r["policy_version"] for r in rows[:4]] == [1, 1, 1, 4]
    assert all(r["advantage"] is None and r["token_advantages"] is None for r in rows)


def test_token_advantages_only_where_spans_route_them() -> None:
    groups = _groups()
    step = flat_steps(groups)[0]
    plain = credit.make("gigpo")(groups)
    assert token_advantages(step, 0, plain) is None  # broadcast: `advantage` says it all


def test_schema_1_rows_are_read_with_new_names_and_refused_for_credit(tmp_path: Path) -> None:
    path = tmp_path / "iter_000001.jsonl"
    old = {"iteration": 1, "group": 0, "trajectory": 0, "step": 0, "state_key": "s", "valid": True}
    path.write_text(json.dumps(old | {"action": "go", "reward": 0.0}) + "\n")
    (row,) = read_rows(path)
    assert row["schema_version"] == 1 and row["action_valid"] is True and "valid" not in row
    assert row["response_token_ids"] is None
    with pytest.raises(DumpSchemaError, match="schema-1 trajectory dump.*re-run"):
        load_dump(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "iter_000001.jsonl"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}) + "\n")
    with pytest.raises(DumpSchemaError, match=f"reads versions 1..{SCHEMA_VERSION}"):
        read_rows(path)


def test_rows_out_of_order_are_an_error(tmp_path: Path) -> None:
    groups = _groups()
    rows = trajectory_rows(1, groups, None)
    rows[1], rows[2] = rows[2], rows[1]
    path = tmp_path / "bad.jsonl"
    RunFolder(tmp_path).write_jsonl(path, rows)
    with pytest.raises(DumpSchemaError, match="not in .group, trajectory, step. order"):
        load_dump(path)
