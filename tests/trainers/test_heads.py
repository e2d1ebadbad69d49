import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from creditgym import credit
from creditgym.agents.models import tiny_model
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.trainers.heads import (
    HIPER_HEADS,
    ValueHeads,
    fill_values,
    gather_hidden,
    heads_for,
    read_offset,
    value_loss,
    value_loss_on_batch,
)


@pytest.fixture(scope="module")
def tiny():
    path = tiny_model()
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def hiper_group(tok) -> TrajectoryGroup:
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    steps = []
    for t, (switch, goal, action) in enumerate(
        [("SWITCH", "find the key", "go to hall"), ("KEEP", "find the key", "take key")]
    ):
        prompt = enc(f"Turn {t}: you are in the {'kitchen' if t == 0 else 'hall'}.")
        head = enc(f"<switch>{switch}</switch><subgoal>{goal}</subgoal>")
        resp = head + enc(f"<action>{action}</action>")
        steps.append(
            Step(f"s{t}", action, float(t), prompt_ids=prompt, response_ids=resp,
                 spans={"subgoal": [(3, len(head))]}, extras={"switch": switch, "subgoal": goal})
        )  # fmt: skip
    return TrajectoryGroup(trajectories=[Trajectory(steps=steps)])


def test_heads_for_each_module():
    assert heads_for(credit.make("ppo")) == ("v",)
    assert heads_for(credit.make("hiper")) == ("high", "low", "term")
    assert heads_for(credit.make("hiper", values="group")) == ()
    assert heads_for(credit.make("empg", base="ppo")) == ("v",)
    assert heads_for(credit.make("gigpo")) == ()


def test_fill_values_reads_each_head_at_its_token(tiny):
    model, tok = tiny
    g = hiper_group(tok)
    heads = ValueHeads(model.config.hidden_size, ["high", "low", "term"], seed=1)
    fill_values(model, heads, [g])
    for step in g.trajectories[0].steps:
        ids = list(step.prompt_ids) + list(step.response_ids)
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[
                -1
            ][0]
            for name in ("high", "low", "term"):
                pos = len(step.prompt_ids) + read_offset(step, name)
                expected = float(heads.heads[name](hidden[pos]).squeeze())
                assert step.values[name] == pytest.approx(expected, abs=1e-4)
        # V_low reads the last token of the subgoal span; the others the last prompt token.
        assert read_offset(step, "low") == step.spans["subgoal"][0][1] - 1
        assert read_offset(step, "high") == -1


def test_value_loss_skips_nan_targets():
    pred = {"high": torch.tensor([1.0, 2.0, 3.0]), "low": torch.tensor([0.0, 0.0])}
    targets = {"high": np.array([2.0, np.nan, 5.0]), "low": np.array([1.0, 3.0])}
    # high: ((1 - 2)^2 + (3 - 5)^2) / 2 = 2.5; low: (1 + 9) / 2 = 5.
    assert float(value_loss(pred, targets)) == pytest.approx(7.5)
    with pytest.raises(KeyError, match="term"):
        value_loss({"term": torch.zeros(1)}, targets)


def test_training_the_heads_on_hiper_targets_reduces_the_loss(tiny):
    model, tok = tiny
    g = hiper_group(tok)
    heads = ValueHeads(model.config.hidden_size, ["high", "low", "term"])
    fill_values(model, heads, [g])
    adv = credit.make("hiper")([g])
    targets = adv.targets  # V_high target only on the boundary turn (NaN on the KEEP turn)
    assert np.isnan(targets["high"][1]) and np.isfinite(targets["high"][0])
    with torch.no_grad():
        first = float(value_loss_on_batch(model, heads, [g], targets))
        # The backbone is frozen here, so its hidden states are computed once.
        hidden = gather_hidden(model, g.trajectories[0].steps, heads.names)
    opt = torch.optim.Adam(heads.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        loss = value_loss(heads(hidden), targets)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.1 * first


def test_lora_adapters_receive_the_value_gradient(tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model()),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    g = hiper_group(tok)
    heads = ValueHeads(model.config.hidden_size, ["v"])
    loss = value_loss_on_batch(lora, heads, [g], {"v": np.array([1.0, -1.0])})
    loss.backward()
    grads = [p.grad for n, p in lora.named_parameters() if "lora_" in n]
    assert grads and all(gr is not None and gr.abs().sum() > 0 for gr in grads)
    assert heads.heads["v"].weight.grad is not None


def test_steps_without_token_records_are_a_clear_error(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="token records"):
        gather_hidden(model, [Step("s", "a", 0.0)], ["v"])


def test_learner_trains_hiper_heads_on_the_modules_targets(tiny):
    from creditgym.trainers.learner import Learner, LearnerConfig

    _, tok = tiny
    learner = Learner(LearnerConfig(value_heads=list(HIPER_HEADS), lr=1e-3), tiny_model())
    groups = [hiper_group(tok)]
    learner.prepare(groups, {"values"})
    assert set(groups[0].trajectories[0].steps[0].values) == set(HIPER_HEADS)
    adv = credit.make("hiper")(groups)
    # V_high has a target only on the boundary turn; the NaN on the KEEP turn must be skipped.
    assert np.isnan(adv.targets["high"]).sum() == 1
    metrics = learner.update(groups, adv)
    assert np.isfinite(metrics["train/value_loss"]) and metrics["train/value_loss"] > 0
