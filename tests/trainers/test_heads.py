"""Value heads: read positions, the learner serving exactly a credit module's heads, their loss
and training (through the learner, which is what runs)."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from creditgym import credit
from creditgym.agents.models import tiny_model
from creditgym.credit.ppo import CriticAdvantages
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup, flat_steps
from creditgym.trainers.heads import ValueHeads, check_heads, read_offset, value_loss
from creditgym.trainers.learner import Learner, LearnerConfig


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


def test_read_positions() -> None:
    step = Step(
        "s", "a", 0.0, prompt_ids=[1, 2], response_ids=[3, 4, 5, 6], spans={"subgoal": [(1, 3)]}
    )
    assert read_offset(step, "subgoal_end") == 2  # the last token of the subgoal span
    assert read_offset(step, "last_prompt_token") == -1
    plain = Step("s", "a", 0.0, prompt_ids=[1], response_ids=[3])
    assert read_offset(plain, "subgoal_end") == -1  # no span: the prompt end
    with pytest.raises(ValueError, match="known: \\['last_prompt_token', 'subgoal_end'\\]"):
        read_offset(step, "first_token")
    with pytest.raises(ValueError, match="value head 'v' reads at 'middle'; known positions"):
        check_heads({"v": "middle"})


def test_learner_serves_exactly_the_modules_heads() -> None:
    path = tiny_model()
    for name, options, heads in [
        ("ppo", {}, ["v"]),
        ("hiper", {}, ["high", "low", "term"]),
        ("empg", {"base": "ppo"}, ["v"]),
    ]:
        module = credit.make(name, **options)
        learner = Learner(LearnerConfig(), path, value_heads=module.value_heads)
        assert learner.value_heads.names == heads
        n_heads = len(heads)
        served = [id(p) for p in learner.value_heads.parameters()]
        assert [id(p) for p in learner.optimizer.param_groups[-1]["params"]] == served
        assert sum(p.numel() for p in learner.value_heads.parameters()) == n_heads * (
            learner.base_model.config.hidden_size + 1
        )
    critic_free = Learner(LearnerConfig(), path, value_heads=credit.make("gigpo").value_heads)
    assert critic_free.value_heads is None and len(critic_free.optimizer.param_groups) == 1
    groups = [
        TrajectoryGroup(
            trajectories=[Trajectory(steps=[Step("s", "a", 0.0, prompt_ids=[1], response_ids=[2])])]
        )
    ]
    with pytest.raises(ValueError, match="serves no value heads"):
        critic_free.prepare(groups, {"values"})


def test_learner_reads_each_head_at_its_declared_token(tiny):
    model, tok = tiny
    g = hiper_group(tok)
    learner = Learner(
        LearnerConfig(seed=1), tiny_model(), value_heads=credit.make("hiper").value_heads
    )
    learner.prepare([g], {"values"})
    plain = AutoModelForCausalLM.from_pretrained(tiny_model()).eval()  # LoRA starts as a no-op
    heads = learner.value_heads
    for step in g.trajectories[0].steps:
        assert set(step.values) == {"high", "low", "term"}
        ids = list(step.prompt_ids) + list(step.response_ids)
        with torch.no_grad():
            out = plain(input_ids=torch.tensor([ids]), output_hidden_states=True)
            hidden = out.hidden_states[-1][0]
            for name, where in (
                ("high", "last_prompt_token"),
                ("low", "subgoal_end"),
                ("term", "last_prompt_token"),
            ):
                pos = len(step.prompt_ids) + read_offset(step, where)
                expected = float(heads.heads[name](hidden[pos]).squeeze())
                assert step.values[name] == pytest.approx(expected, abs=1e-4)
        # V_low reads the last token of the subgoal span; the others the last prompt token.
        assert read_offset(step, "subgoal_end") == step.spans["subgoal"][0][1] - 1
        # ... and not at the prompt end, where it would read without the subgoal.
        with torch.no_grad():
            at_prompt_end = float(heads.heads["low"](hidden[len(step.prompt_ids) - 1]).squeeze())
        assert step.values["low"] != pytest.approx(at_prompt_end, abs=1e-4)


def test_value_loss_skips_nan_targets():
    pred = {"high": torch.tensor([1.0, 2.0]), "low": torch.tensor([0.0, 0.0])}
    targets = {"high": np.array([9.0, 2.0, np.nan, 5.0]), "low": np.array([0.0, 1.0, 3.0, 7.0])}
    # This micro-batch holds steps 1 and 3 of a mini-batch with 3 finite "high" targets, 4 "low":
    # high: ((1 - 2)^2 + (2 - 5)^2) / 3 = 10 / 3; low: (1 + 49) / 4 = 12.5.
    counts = {"high": 3, "low": 4}
    loss = value_loss(pred, targets, [1, 3], counts)
    assert loss.item() == pytest.approx(10 / 3 + 12.5)
    nan_only = value_loss({"high": torch.tensor([1.0])}, {"high": targets["high"]}, [2], counts)
    assert nan_only.item() == 0.0


def test_heads_init_is_seeded_in_declaration_order():
    a = ValueHeads(8, ["v"], seed=3)
    b = ValueHeads(8, ["v", "w"], seed=3)
    assert torch.equal(a.heads["v"].weight, b.heads["v"].weight)
    assert not torch.equal(b.heads["v"].weight, b.heads["w"].weight)
    with pytest.raises(ValueError, match="at least one head"):
        ValueHeads(8, [])


def test_learner_trains_hiper_heads_and_lora_on_the_value_loss(tiny):
    _, tok = tiny
    torch.manual_seed(0)  # the LoRA init
    module = credit.make("hiper")
    learner = Learner(
        LearnerConfig(lr=2e-3, kl_coef=0.0, mini_batches=1),
        tiny_model(),
        value_heads=module.value_heads,
    )
    groups = [hiper_group(tok)]
    learner.prepare(groups, {"values"})
    adv = module(groups)
    # V_high has a target only on the boundary turn; the NaN on the KEEP turn must be skipped.
    assert np.isnan(adv.targets["high"]).sum() == 1
    targets = adv.targets
    lora_before = [p.detach().clone() for n, p in learner.model.named_parameters() if "lora_B" in n]
    # Zero advantages: the policy loss has no gradient, so all learning comes from the heads' loss.
    fixed = CriticAdvantages(values=np.zeros(2), targets=targets)
    errors, losses = [], []
    for _ in range(8):
        learner.prepare(groups, {"values"})
        pred = {h: np.array([s.values[h] for s in flat_steps(groups)]) for h in targets}
        errors.append(sum(float(np.nansum((pred[h] - targets[h]) ** 2)) for h in targets))
        metrics = learner.update(groups, fixed)
        losses.append(metrics["train/value_loss"])
    assert np.isfinite(losses).all() and losses[0] > 0
    assert errors[-1] < 0.2 * errors[0]  # seeds 0-3: 17.0 -> 0.7 .. 1.1
    lora_after = [p.detach() for n, p in learner.model.named_parameters() if "lora_B" in n]
    # The value gradient reaches the adapters (lora_B starts at 0 and moved).
    assert any(not torch.equal(a, b) for a, b in zip(lora_before, lora_after))


def test_checkpoint_heads_must_match_the_served_ones():
    path = tiny_model()
    ppo = Learner(LearnerConfig(), path, value_heads=credit.make("ppo").value_heads)
    hiper = Learner(LearnerConfig(), path, value_heads=credit.make("hiper").value_heads)
    with pytest.raises(
        ValueError, match=r"checkpoint has value heads \['v'\], this learner serves"
    ):
        hiper.load_state_dict(ppo.state_dict())
    clone = Learner(LearnerConfig(), path, value_heads={"v": "last_prompt_token"})
    clone.load_state_dict(ppo.state_dict())
    assert torch.equal(clone.value_heads.heads["v"].weight, ppo.value_heads.heads["v"].weight)
