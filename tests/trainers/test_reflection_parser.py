"""R^3L's LLM reflection reports (issue 18): malformed output is never accepted silently. Each
invalid text is rejected with a reason, counted in ``reflection_invalid``, kept in the base
trajectory's ``info["reflection"]``, and gives no retry; nothing is dropped."""

from __future__ import annotations

import json

import pytest

from creditgym.agents.backends.base import Generation, SamplingConfig, check_request
from creditgym.credit.trajectory import Step, Trajectory
from creditgym.trainers.strategies_branching import (
    REPORT_KEYS,
    RetryStrategy,
    check_reflection,
    parse_reflection,
    record_reflections,
    reflection_schema,
)

GOOD = {
    "trajectory_summary": "went to the attic without the key",
    "root_cause_analysis": "left the key behind",
    "trajectory_outcome": "failure",
    "improvement_suggestion": "take the key first",
    "retry_from_step": 2,
}


def _text(**change) -> str:
    report = {**GOOD, **change}
    return json.dumps({k: v for k, v in report.items() if v is not ...})


#: (text, words the reason must contain) for a 3-step trajectory
MALFORMED = [
    ("", "no JSON object"),
    ("I think the agent should take the key.", "no JSON object"),
    ("} backwards {", "no JSON object"),
    ('{"trajectory_summary": "s", "retry_from_step": 1', "no JSON object"),  # cut off
    ('{"trajectory_summary": "s", retry_from_step: 1}', "invalid JSON"),
    (_text() + ' and also {"note": 1}', "invalid JSON"),  # two objects: the span is not JSON
    ('{"a": [1, 2]}', "missing keys"),
    (_text(root_cause_analysis=...), "missing keys ['root_cause_analysis']"),
    (_text(retry_from_step="2"), "not an integer"),
    (_text(retry_from_step=2.0), "not an integer"),
    (_text(retry_from_step=True), "not an integer"),
    (_text(retry_from_step=None), "not an integer"),
    (_text(retry_from_step=3), "outside [0, 3)"),
    (_text(retry_from_step=-1), "outside [0, 3)"),
    (_text(trajectory_outcome="partial"), "not in"),
    (_text(trajectory_outcome=None), "not in"),
]


@pytest.mark.parametrize("text,why", MALFORMED)
def test_a_malformed_report_is_rejected_with_its_reason(text, why):
    report, error = check_reflection(text, 3)
    assert report is None and error is not None and why in error
    assert parse_reflection(text, 3) is None


def test_a_valid_report_is_accepted_as_written():
    wrapped = "Here is my report:\n```json\n" + _text() + "\n```"
    report, error = check_reflection(wrapped, 3)
    assert error is None and report == GOOD and set(REPORT_KEYS) <= set(report)
    assert check_reflection(_text(retry_from_step=0), 1)[0]["retry_from_step"] == 0


def _base(i: int) -> Trajectory:
    steps = [Step(state_key=f"s{t}", action="a", reward=0.0) for t in range(3)]
    return Trajectory(steps=steps, task_id="t", seed=i, role="base", pair_id=f"0.{i}")


def test_invalid_reflections_are_counted_and_kept_and_give_no_retry():
    texts = [m[0] for m in MALFORMED] + [
        _text(),  # valid failure: retry from step 2
        _text(trajectory_outcome="success"),  # valid, but no retry
        _text(trajectory_outcome="success_but_inefficient", retry_from_step=0),
    ]
    trajs = [_base(i) for i in range(len(texts))]
    prompts = [[1, 2, 3]] * len(texts)
    gens = [Generation(token_ids=[7, 8], logprobs=[-0.1, -0.2], text=x) for x in texts]
    stats: dict[str, float] = {}
    pivots, reflections = record_reflections(trajs, prompts, gens, stats)

    n_bad = len(MALFORMED)
    assert stats == {"reflections": n_bad + 3, "reflection_invalid": n_bad, "reflection_success": 1}
    assert pivots == [None] * n_bad + [2, None, 0]
    # nothing lost: every base keeps its text and verdict, invalid ones with the reason
    for t, text in zip(trajs, texts):
        assert t.info["reflection"]["text"] == text
    for t, (_, why) in zip(trajs[:n_bad], MALFORMED):
        assert t.info["reflection"]["valid"] is False and why in t.info["reflection"]["error"]
    assert all(t.info["reflection"]["valid"] for t in trajs[n_bad:])
    # only the two retried reports become learn-to-reflect samples, with their tokens
    assert sorted(reflections) == [f"0.{n_bad}", f"0.{n_bad + 2}"]
    sample = reflections[f"0.{n_bad}"]
    assert sample.role == "reflection" and sample.pair_id == f"0.{n_bad}"
    assert sample.steps[0].response_ids == [7, 8] and sample.steps[0].prompt_ids == [1, 2, 3]
    assert sample.steps[0].extras["report"] == GOOD


def test_a_generation_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 trajectories, 2 prompts and 1 generations"):
        record_reflections(
            [_base(0), _base(1)], [[1], [1]], [Generation([1], [0.0], "{}")], stats={}
        )


def test_a_prefilled_opening_is_parsed_with_the_generated_rest():
    prefix = '{"trajectory_summary": "'
    rest = _text()[len(prefix) :]
    stats: dict[str, float] = {}
    gen = Generation(token_ids=[5], logprobs=[-1.0], text=rest)
    pivots, reflections = record_reflections([_base(0)], [[1]], [gen], stats, prefix=prefix)
    assert pivots == [2] and stats == {"reflections": 1}
    assert reflections["0.0"].steps[0].text == rest  # the trained tokens are the generated ones
    # without the opening the same output is no report, and counted
    pivots, _ = record_reflections([_base(1)], [[1]], [gen], stats)
    assert pivots == [None] and stats["reflection_invalid"] == 1


def test_the_report_schema_admits_exactly_the_reports_the_parser_accepts():
    schema = reflection_schema(3, max_chars=40)
    props = schema["properties"]
    assert list(props) == list(REPORT_KEYS) and schema["required"] == list(REPORT_KEYS)
    assert schema["additionalProperties"] is False
    assert props["trajectory_outcome"]["enum"] == ["success", "success_but_inefficient", "failure"]
    # the step range is the parser's 0 <= k < T (T = 3 here: 0, 1, 2)
    assert (props["retry_from_step"]["minimum"], props["retry_from_step"]["maximum"]) == (0, 2)
    assert all(props[k]["maxLength"] == 40 for k in REPORT_KEYS if props[k].get("maxLength"))
    with pytest.raises(ValueError, match="at least one step"):
        reflection_schema(0)


def test_a_schema_request_is_refused_by_a_backend_that_cannot_constrain():
    sampling = SamplingConfig(json_schema=reflection_schema(2))
    with pytest.raises(ValueError, match="cannot constrain decoding to a JSON schema"):
        check_request([[1]], sampling)
    check_request([[1]], sampling, structured=True)  # the in-process vLLM backend passes this


def test_the_schema_option_refuses_a_prefill():
    with pytest.raises(ValueError, match="leave reflection_prefix empty"):
        RetryStrategy(
            reflector="llm", guide="none", reflection_schema=True, reflection_prefix='{"a": "'
        )
    assert RetryStrategy(reflector="llm", guide="none", reflection_schema=True).reflection_schema
