import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from creditgym.agents.models import tiny_model
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers.answer_scoring import build_queries, score_answers


@pytest.fixture(scope="module")
def tiny():
    path = tiny_model()
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def qa_group(tok, truth="Paris"):
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    p0 = enc("Question: what is the capital of France?")
    r0 = enc("<search>capital of France</search>")
    p1 = p0 + r0 + enc("<information>Paris is the capital of France.</information>")
    r1 = enc("<answer>Paris</answer>")
    steps = [
        Step("q", "<search>capital of France</search>", 0.0, prompt_ids=p0, response_ids=r0),
        Step("q2", "<answer>Paris</answer>", 1.0, prompt_ids=p1, response_ids=r1,
             info={"ground_truth": truth}),
    ]  # fmt: skip
    no_truth = Trajectory(steps=[Step("q", "x", 0.0, prompt_ids=p0, response_ids=r0)])
    return TrajectoryGroup(trajectories=[Trajectory(steps=steps), no_truth])


def reference_mean_logprob(model, ids, n):
    """Unbatched, full-logits teacher forcing: mean log-prob of the last n tokens."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(ids[1:])
    return float(logp[torch.arange(len(ids) - 1), targets][-n:].mean())


def test_scores_match_unbatched_teacher_forcing(tiny):
    model, tok = tiny
    g = qa_group(tok)
    prefix, answer = "</think>\n<answer>", "Paris"
    metrics = score_answers(model, tok, [g], answer_prefix=prefix)
    assert metrics["igpo/scored_turns"] == 2
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    tail = enc(prefix) + enc(answer)
    s0, s1 = g.trajectories[0].steps
    n = len(enc(answer))
    # Turn 0: before = its prompt; after = turn 1's prompt (it holds the retrieved passage).
    assert s0.answer_logprob_before == pytest.approx(
        reference_mean_logprob(model, list(s0.prompt_ids) + tail, n), abs=1e-4
    )
    assert s0.answer_logprob_after == pytest.approx(
        reference_mean_logprob(model, list(s1.prompt_ids) + tail, n), abs=1e-4
    )
    # Last turn: after = its prompt + its response.
    last = list(s1.prompt_ids) + list(s1.response_ids) + tail
    assert s1.answer_logprob_after == pytest.approx(
        reference_mean_logprob(model, last, n), abs=1e-4
    )
    # The trajectory without a ground truth is untouched.
    assert g.trajectories[1].steps[0].answer_logprob_before is None


def test_batching_and_padding_do_not_change_scores(tiny):
    model, tok = tiny
    big, small = qa_group(tok), qa_group(tok)
    score_answers(model, tok, [big], max_batch_tokens=100_000)
    m = score_answers(model, tok, [small], max_batch_tokens=16)
    assert m["igpo/batches"] == 4  # one query per micro-batch
    for a, b in zip(big.trajectories[0].steps, small.trajectories[0].steps):
        np.testing.assert_allclose(
            [a.answer_logprob_before, a.answer_logprob_after],
            [b.answer_logprob_before, b.answer_logprob_after],
            atol=1e-4,
        )


def test_scored_steps_feed_igpo(tiny):
    from creditgym import credit

    model, tok = tiny
    g = qa_group(tok)
    g.trajectories.pop()  # IGPO needs a ground truth on every trajectory
    g.trajectories.append(qa_group(tok, truth="Lyon").trajectories[0])
    score_answers(model, tok, [g])
    adv = credit.make("igpo")([g])
    assert np.isfinite(adv.values).all() and len(adv.values) == 4


def test_missing_token_records_are_a_clear_error(tiny):
    _, tok = tiny
    g = TrajectoryGroup(
        trajectories=[Trajectory(steps=[Step("q", "a", 0.0, info={"ground_truth": "x"})])]
    )
    with pytest.raises(ValueError, match="token records"):
        build_queries(tok, [g], "<answer>")
