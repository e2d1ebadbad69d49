"""The learner on the tiny model: token-exact samples, prepare, PPO update, reference, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from creditgym.agents.backends import SamplingConfig
from creditgym.agents.backends.hf import HFBackend
from creditgym.agents.llm import LLMAgent
from creditgym.agents.models import tiny_model
from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup, flat_steps
from creditgym.trainers.learner import Learner, LearnerConfig
from creditgym.trainers.rollout import EnvPool, collect


def _rollout(learner: Learner, context: str = "steps", tasks: int = 2, group: int = 2):
    backend = HFBackend(model=learner.model, tokenizer=learner.tokenizer)
    agent = LLMAgent(
        backend,
        learner.tokenizer,
        context=context,
        sampling=SamplingConfig(max_new_tokens=6, seed=0),
    )
    with EnvPool(
        "creditgym/KeyRooms-v0", tasks * group, env_kwargs={"level": "small", "max_steps": 3}
    ) as pool:
        return collect(pool, agent, list(range(tasks)), group, list(range(tasks))).groups


def _step(prompt: list[int], response: list[int], **kw) -> Step:
    return Step(
        state_key="s", action="a", reward=0.0, prompt_ids=prompt, response_ids=response, **kw
    )


def _group(*trajs: list[Step]) -> list[TrajectoryGroup]:
    return [TrajectoryGroup(trajectories=[Trajectory(steps=list(t)) for t in trajs])]


def _tokens_of(learner: Learner, samples: list, adv: Advantages) -> dict:
    """Per-sample (advantages, mask, weight) token tensors, as `Learner.update` builds them."""
    mask, weight = adv.step_mask(), adv.step_weight()
    return {
        id(s): (learner._token_advantages(s, adv), *learner._token_mask_and_weight(s, mask, weight))
        for s in samples
    }


def _sums() -> dict[str, float]:
    return dict.fromkeys(["pg", "kl", "entropy", "approx_kl", "value"], 0.0)


def _grads(learner: Learner) -> torch.Tensor:
    trainable = [p for p in learner.model.parameters() if p.requires_grad]
    return torch.cat([p.grad.flatten() for p in trainable])


@pytest.fixture(scope="module")
def learner() -> Learner:
    return Learner(LearnerConfig(), tiny_model())


@pytest.fixture(scope="module")
def rolled(learner: Learner) -> tuple[Learner, list[TrajectoryGroup]]:
    return learner, _rollout(learner)


def test_trained_tokens_are_the_sampled_tokens(rolled) -> None:
    learner, groups = rolled
    samples = learner.build_samples(groups)
    steps = flat_steps(groups)
    assert len(samples) == len(steps) > 0
    for sample, step in zip(samples, steps):
        assert sample.ids == list(step.prompt_ids) + list(step.response_ids)
        assert [sample.ids[p] for p in sample.positions] == list(step.response_ids)
    metrics = learner.prepare(groups, {"entropies"})
    # Same tokens, same weights: the learner's recomputed log-probs match the sampler's.
    assert metrics["train/logprob_mismatch_abs"] < 1e-4
    for step in steps:
        assert step.entropies is not None and len(step.entropies) == len(step.response_ids)
        assert np.all(step.entropies > 0) and np.all(
            step.entropies <= np.log(len(learner.tokenizer)) + 1e-3
        )


def test_concat_mode_masks_env_tokens_and_routes_each_turns_advantage(learner) -> None:
    p0, r0, env1, r1, env2, r2 = [1, 2, 3], [10, 11], [4, 5], [12, 13, 14], [6], [15]
    steps = [
        _step(p0, r0),
        _step(p0 + r0 + env1, r1),
        _step(p0 + r0 + env1 + r1 + env2, r2),
    ]
    other = [_step([7, 8], [20]), _step([9, 9], [21])]  # prompts that do not extend: 2 samples
    groups = _group(steps, other)
    learner.config.context = "concat"
    try:
        samples = learner.build_samples(groups)
    finally:
        learner.config.context = "steps"
    assert len(samples) == 3
    whole = samples[0]
    assert whole.ids == p0 + r0 + env1 + r1 + env2 + r2
    assert [whole.ids[p] for p in whole.positions] == r0 + r1 + r2  # env and prompt tokens masked
    adv = Advantages(values=np.array([1.0, -2.0, 3.0, 0.5, -0.5]))
    assert learner._token_advantages(whole, adv).tolist() == [1.0, 1.0, -2.0, -2.0, -2.0, 3.0]
    assert [learner._token_advantages(s, adv).tolist() for s in samples[1:]] == [[0.5], [-0.5]]
    assert len(learner.build_samples(groups)) == 5  # steps mode: one sample per step


def test_span_routed_advantages(learner) -> None:
    step = _step([1, 2], [30, 31, 32, 33, 34, 35], spans={"switch": [(0, 1)], "action": [(3, 6)]})
    groups = _group([_step([1], [9]), step])
    adv = Advantages(
        values=np.array([0.0, 1.0]),
        spans={"switch": np.array([0.0, -1.0]), "action": np.array([0.0, 2.0])},
    )
    sample = learner.build_samples(groups)[1]
    # switch token -> -1, untagged tokens keep the step's value 1, action tokens -> 2
    assert learner._token_advantages(sample, adv).tolist() == [-1.0, 1.0, 1.0, 2.0, 2.0, 2.0]


def test_update_moves_log_probs_in_the_advantage_direction() -> None:
    learner = Learner(LearnerConfig(lr=2e-3, kl_coef=0.0, mini_batches=2, epochs=2), tiny_model())
    steps = [
        _step([1, 2, 3], [40, 41]),
        _step([1, 2, 3], [50, 51]),
        _step([4, 5], [60]),
        _step([4, 6], [61]),
    ]
    groups = _group(steps)
    adv = Advantages(values=np.array([1.0, -1.0, 1.0, -1.0]))
    learner.prepare(groups, {"old_logprobs"})
    before = [s.old_logp.clone() for s in learner._prepared[1]]
    metrics = learner.update(groups, adv)
    assert metrics["train/optimizer_steps"] == 4.0  # 2 epochs x 2 mini-batches
    assert metrics["train/tokens"] == 2 * 6
    learner.prepare(groups, {"old_logprobs"})
    after = [s.old_logp for s in learner._prepared[1]]
    for a, b, sign in zip(before, after, adv.values):
        assert float(torch.sign((b - a).mean())) == sign
    assert metrics["train/clip_frac"] >= 0.0 and metrics["train/grad_norm"] > 0


def test_micro_batching_accumulates_to_the_same_gradient() -> None:
    """Token-mean over a mini-batch: any micro-batch split gives the same gradient."""
    learner = Learner(LearnerConfig(packing=False), tiny_model())
    # Every sample has >= 9 tokens, so a 16-token budget holds one sample per micro-batch.
    steps = [_step(list(range(1, 9 + i)), [40 + i, 41 + i, 42][: 1 + i % 3]) for i in range(6)]
    groups = _group(steps)
    adv = Advantages(values=np.linspace(-1.0, 1.0, 6))
    learner.prepare(groups, {"old_logprobs"})
    samples = learner._prepared[1]
    tokens_of = _tokens_of(learner, samples, adv)
    grads = []
    for budget in (16, 4096):  # one sample per micro-batch vs all in one
        learner.config.micro_batch_tokens = budget
        learner.optimizer.zero_grad(set_to_none=True)
        learner._backward_minibatch(samples, tokens_of, {}, _sums())
        trainable = [p for p in learner.model.parameters() if p.requires_grad]
        grads.append(torch.cat([p.grad.flatten() for p in trainable]))
        assert len(learner._micro_batches(samples)) == (6 if budget == 16 else 1)
    assert grads[0].abs().max() > 0
    # float32 noise only (a per-micro-batch mean would be off by the gradient's own size)
    assert (grads[0] - grads[1]).abs().max() <= 1e-5 * grads[0].abs().max()


def test_lora_reference_is_the_adapter_disabled_model() -> None:
    from transformers import AutoModelForCausalLM

    learner = Learner(LearnerConfig(lr=5e-3), tiny_model())
    groups = _group([_step([1, 2, 3], [40, 41, 42]), _step([1, 2, 5], [43, 44])])
    learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    learner.prepare(groups, {"old_logprobs"})
    plain = AutoModelForCausalLM.from_pretrained(tiny_model()).eval()
    for sample in learner._prepared[1]:
        ids = torch.tensor([sample.ids])
        with torch.no_grad():
            logits = plain(ids).logits[0]
        pos = torch.tensor(sample.positions)
        expected = torch.log_softmax(logits[pos - 1], -1).gather(1, ids[0, pos][:, None]).squeeze(1)
        assert torch.allclose(sample.ref_logp, expected, atol=1e-5)  # reference = base weights
        assert not torch.allclose(sample.old_logp, expected, atol=1e-4)  # the policy has moved


def test_full_finetune_keeps_a_frozen_reference() -> None:
    learner = Learner(LearnerConfig(finetune="full", lr=1e-3), tiny_model())
    steps = [_step([1, 2, 3], [40, 41]), _step([1, 2, 4], [42])]
    groups = _group(steps)
    ref_before = [p.clone() for p in learner.reference.parameters()]
    learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    assert all(torch.equal(a, b) for a, b in zip(ref_before, learner.reference.parameters()))
    moved = any(
        not torch.equal(a, b)
        for a, b in zip(learner.reference.parameters(), learner.model.parameters())
    )
    assert moved


def test_prepare_fills_values_and_answer_logprobs() -> None:
    from transformers import AutoModelForCausalLM

    from creditgym.trainers.heads import read_offset

    positions = {"v": "last_prompt_token", "low": "subgoal_end", "term": "last_prompt_token"}
    learner = Learner(LearnerConfig(), tiny_model(), value_heads=positions)
    tok = learner.tokenizer

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    steps = [
        _step(
            enc("Question: capital of France?"),
            enc("<search>France</search>"),
            info={"ground_truth": "Paris"},
        ),
        _step(
            enc("Question: capital of France? Doc: Paris is."),
            enc("<switch>KEEP</switch><subgoal>answer</subgoal><action>Paris</action>"),
            spans={"subgoal": [(5, 9)]},
        ),
    ]
    groups = _group(steps)
    metrics = learner.prepare(groups, {"values", "answer_logprobs", "entropies"})
    assert metrics["train/igpo/scored_turns"] == 2
    # The values read in the policy pass equal the heads applied, on a plain forward of the
    # base model (LoRA starts as a no-op), at each head's declared position.
    heads = learner.value_heads
    plain = AutoModelForCausalLM.from_pretrained(tiny_model()).eval()
    for s in steps:
        assert set(s.values) == set(positions)
        ids = torch.tensor([list(s.prompt_ids) + list(s.response_ids)])
        with torch.no_grad():
            hidden = plain(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
            for name, where in positions.items():
                at = hidden[len(s.prompt_ids) + read_offset(s, where)]
                expected = float(heads.heads[name](at).squeeze())
                assert s.values[name] == pytest.approx(expected, abs=1e-5)
        assert s.answer_logprob_before is not None and s.answer_logprob_before < 0
        assert s.answer_logprob_after is not None
    assert steps[1].values["low"] != pytest.approx(steps[1].values["term"])  # read at </subgoal>
    # after turn 0 == before turn 1 (the same context is scored)
    assert steps[0].answer_logprob_after == pytest.approx(steps[1].answer_logprob_before, abs=1e-5)
    with pytest.raises(ValueError, match="unknown needs"):
        learner.prepare(groups, {"q_values"})


def test_value_heads_train_on_critic_targets() -> None:
    from creditgym.credit.ppo import CriticAdvantages

    learner = Learner(
        LearnerConfig(lr=1e-3, kl_coef=0.0), tiny_model(), value_heads={"v": "last_prompt_token"}
    )
    groups = _group([_step([1, 2, 3], [40, 41]), _step([1, 2, 4], [42]), _step([5, 6], [43])])
    target = np.array([2.0, np.nan, -1.0])  # NaN: no target for that step
    adv = CriticAdvantages(values=np.zeros(3), targets={"v": target})
    errors = []
    for _ in range(5):
        learner.prepare(groups, {"values"})
        v = np.array([s.values["v"] for s in flat_steps(groups)])
        errors.append(float(np.nansum((v - target) ** 2)))
        metrics = learner.update(groups, adv)
        assert metrics["train/value_loss"] >= 0
    assert errors[-1] < 0.2 * errors[0]  # by hand: 3.77 -> 0.08 after 3 updates
    with pytest.raises(ValueError, match=r"value targets for heads \['q'\] but the learner serves"):
        learner.update(groups, CriticAdvantages(values=np.zeros(3), targets={"q": target}))


def test_state_dict_round_trip_and_merged_export(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = LearnerConfig(lr=5e-3)
    learner = Learner(cfg, tiny_model())
    groups = _group([_step([1, 2, 3], [40, 41, 42]), _step([1, 2, 5], [43])])
    learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    state = learner.state_dict()
    clone = Learner(cfg, tiny_model())
    clone.load_state_dict(state)
    ids = torch.tensor([[1, 2, 3, 40, 41, 42]])
    with torch.no_grad():
        ref_logits = learner.model(ids).logits
        assert torch.equal(clone.model(ids).logits, ref_logits)
    assert clone.updates == 1
    assert (
        clone.optimizer.state_dict()["state"].keys()
        == learner.optimizer.state_dict()["state"].keys()
    )
    # both continue identically
    learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    clone.update(groups, Advantages(values=np.array([1.0, -1.0])))
    with torch.no_grad():
        assert torch.allclose(clone.model(ids).logits, learner.model(ids).logits, atol=1e-6)
        ref_logits = learner.model(ids).logits

    out = Path(learner.save_merged(tmp_path / "merged"))
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k or k.startswith("base_model") for k in keys)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, ref_logits, atol=1e-4)
    assert "lora_A" in next(
        n for n, _ in learner.model.named_parameters() if "lora" in n
    )  # not merged in place

    with pytest.raises(ValueError, match="'full' model"):
        Learner(LearnerConfig(finetune="full", kl_coef=0.0), tiny_model()).load_state_dict(
            state | {"finetune": "lora"}
        ) if False else learner.load_state_dict(state | {"finetune": "full"})


def test_bad_config_and_bad_input_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="finetune must be one of"):
        Learner(LearnerConfig(finetune="qlora"), tiny_model())
    learner = Learner(LearnerConfig(), tiny_model())
    tabular = _group([Step(state_key="s", action="a", reward=0.0)])
    with pytest.raises(ValueError, match="no token ids"):
        learner.prepare(tabular)
    groups = _group([_step([1, 2], [3])])
    with pytest.raises(ValueError, match="1 steps"):
        learner.update(groups, Advantages(values=np.zeros(2)))


def test_objective_matches_todays_formula_on_the_tiny_model() -> None:
    """Loss and gradients of the registered objective (ppo_clip + kl + entropy) equal PPO-clip +
    kl_coef k3-KL - entropy_coef entropy, token-mean, written out on full-logit forwards."""
    cfg = LearnerConfig(lr=5e-3, kl_coef=0.05, entropy_coef=0.01, clip_low=0.1, clip_high=0.15)
    learner = Learner(cfg, tiny_model())
    steps = [_step([1, 2, 3], [40, 41, 42]), _step([1, 2, 5], [43, 44]), _step([7], [45])]
    groups = _group(steps)
    learner.update(groups, Advantages(values=np.array([1.0, -1.0, 0.5])))  # leave the reference
    learner.prepare(groups, {"old_logprobs"})
    samples = learner._prepared[1]
    gen = torch.Generator().manual_seed(0)
    for s in samples:  # an older policy, so that some ratios leave the clip range
        s.old_logp = s.old_logp + 0.3 * torch.randn(s.old_logp.shape, generator=gen)
    adv = Advantages(values=np.array([0.7, -1.3, 2.0]))
    learner.optimizer.zero_grad(set_to_none=True)
    sums = _sums()
    learner._backward_minibatch(samples, _tokens_of(learner, samples, adv), {}, sums)
    got = _grads(learner)

    learner.optimizer.zero_grad(set_to_none=True)
    n_tokens = sum(s.num_tokens for s in samples)
    total, clipped_any = torch.zeros(()), False
    for s, a in zip(samples, adv.values):
        ids = torch.tensor([s.ids])
        pos = torch.tensor(s.positions)
        logp_all = torch.log_softmax(learner.model(ids).logits[0, pos - 1].float(), -1)
        logp = logp_all.gather(1, ids[0, pos][:, None]).squeeze(1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        with torch.no_grad(), learner.model.disable_adapter():
            ref_all = torch.log_softmax(learner.model(ids).logits[0, pos - 1].float(), -1)
        ref = ref_all.gather(1, ids[0, pos][:, None]).squeeze(1)
        ratio = torch.exp(logp - s.old_logp)
        pg = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 0.9, 1.15))
        clipped_any |= bool((ratio < 0.9).any() or (ratio > 1.15).any())
        log_r = ref - logp
        k3 = torch.exp(log_r) - log_r - 1.0
        total = total + (pg + 0.05 * k3 - 0.01 * entropy).sum()
    loss = total / n_tokens
    loss.backward()
    expected = _grads(learner)
    assert clipped_any
    assert sums["pg"] + 0.05 * sums["kl"] - 0.01 * sums["entropy"] == pytest.approx(
        float(loss.detach()), abs=1e-6
    )
    assert sums["kl"] > 0
    assert expected.abs().max() > 0
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_masked_steps_get_no_gradient_and_leave_the_denominator() -> None:
    learner = Learner(LearnerConfig(kl_coef=0.05, entropy_coef=0.01), tiny_model())
    steps = [_step([1, 2, 3], [40, 41]), _step([4, 5], [50, 51, 52]), _step([6], [60])]
    learner.update(_group(steps), Advantages(values=np.array([1.0, -1.0, 1.0])))  # KL != 0
    adv = np.array([0.5, 3.0, -1.0])
    grads, sums = [], []
    for kept, mask in ((steps, np.array([True, False, True])), ([steps[0], steps[2]], None)):
        groups = _group(kept)
        learner.prepare(groups, {"old_logprobs"})
        samples = learner._prepared[1]
        a = Advantages(values=adv if mask is not None else adv[[0, 2]], mask=mask)
        learner.optimizer.zero_grad(set_to_none=True)
        sums.append(_sums())
        learner._backward_minibatch(samples, _tokens_of(learner, samples, a), {}, sums[-1])
        grads.append(_grads(learner))
    # The masked step adds no gradient and no token to the mean: as if it were not there.
    assert grads[1].abs().max() > 0
    assert (grads[0] - grads[1]).abs().max() <= 1e-5 * grads[1].abs().max()
    for key in ("pg", "kl", "entropy", "approx_kl"):  # KL and entropy skip it too
        assert sums[0][key] == pytest.approx(sums[1][key], abs=1e-6), key
    assert sums[0]["kl"] > 0

    # Through update: its tokens are not counted, and a batch masked entirely trains nothing.
    groups = _group(steps)
    m = learner.update(groups, Advantages(values=adv, mask=np.array([True, False, True])))
    assert m["train/tokens"] == 3.0
    before = [p.detach().clone() for p in learner.model.parameters() if p.requires_grad]
    m = learner.update(groups, Advantages(values=adv, mask=np.zeros(3, dtype=bool)))
    assert m == {"train/samples": 0.0}
    after = [p for p in learner.model.parameters() if p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    with pytest.raises(ValueError, match="mask has 2 entries for 3 steps"):
        learner.update(groups, Advantages(values=adv, mask=np.ones(2, dtype=bool)))


def test_masked_steps_leave_the_value_loss() -> None:
    from creditgym.credit.ppo import CriticAdvantages

    learner = Learner(
        LearnerConfig(kl_coef=0.0), tiny_model(), value_heads={"v": "last_prompt_token"}
    )
    groups = _group([_step([1, 2], [40]), _step([3, 4], [41])])
    learner.prepare(groups, {"values"})
    target = np.array([5.0, -5.0])
    targets = learner._value_targets(
        CriticAdvantages(values=np.zeros(2), targets={"v": target}), 2, np.array([True, False])
    )
    assert targets["v"][0] == 5.0 and np.isnan(targets["v"][1])


def test_step_weights_scale_their_contribution() -> None:
    learner = Learner(LearnerConfig(kl_coef=0.05, entropy_coef=0.01), tiny_model())
    steps = [_step([1, 2, 3], [40, 41]), _step([4, 5], [50, 51, 52])]
    groups = _group(steps)
    learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    learner.prepare(groups, {"old_logprobs"})
    samples = learner._prepared[1]
    values = np.array([0.8, -0.6])
    grads, sums = [], []
    for w in ([1.0, 0.0], [0.0, 1.0], [2.0, 0.5]):
        a = Advantages(values=values, weight=np.array(w))
        learner.optimizer.zero_grad(set_to_none=True)
        sums.append(_sums())
        learner._backward_minibatch(samples, _tokens_of(learner, samples, a), {}, sums[-1])
        grads.append(_grads(learner))
    # Linear in the weights, with the denominator (all 5 tokens) unchanged.
    combined = 2.0 * grads[0] + 0.5 * grads[1]
    assert (grads[2] - combined).abs().max() <= 1e-5 * combined.abs().max()
    for key in ("pg", "kl", "entropy"):
        assert sums[2][key] == pytest.approx(2.0 * sums[0][key] + 0.5 * sums[1][key], abs=1e-6)


def test_loss_names_choose_the_objective() -> None:
    with pytest.raises(ValueError, match=r"unknown policy loss 'grpo_clip'; registered: \["):
        Learner(LearnerConfig(), tiny_model(), loss_policy="grpo_clip")
    with pytest.raises(ValueError, match=r"unknown loss term 'kll'; registered: \[.*'kl'"):
        Learner(LearnerConfig(), tiny_model(), loss_terms=["kll"])
    # Without the "kl" term no reference is kept or scored, whatever kl_coef says.
    learner = Learner(
        LearnerConfig(finetune="full", kl_coef=0.1), tiny_model(), loss_terms=["entropy"]
    )
    assert learner.reference is None and not learner.objective.needs_reference
    groups = _group([_step([1, 2], [40, 41]), _step([3], [42])])
    learner.prepare(groups)
    assert all(s.ref_logp is None for s in learner._prepared[1])
    m = learner.update(groups, Advantages(values=np.array([1.0, -1.0])))
    assert "train/kl" not in m and "train/entropy" in m
