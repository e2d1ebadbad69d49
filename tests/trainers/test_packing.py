"""Shared-prefix packing is exact (log-probs, entropies, gradients) and the old-log-prob pass is
skipped only where it is exact: the tiny model, small random Qwen2 / Qwen3 / Mistral, SmolLM2."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from creditgym.agents.models import tiny_model
from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup, flat_steps
from creditgym.trainers import packing
from creditgym.trainers.learner import Learner, LearnerConfig

EXACT = {"logp": 1e-5, "entropy": 1e-5, "cosine": 0.99999, "rel": 1e-4}


def _assert_exact(r: dict[str, float]) -> None:
    assert r["logp_max_abs"] <= EXACT["logp"], r
    assert r["entropy_max_abs"] <= EXACT["entropy"], r
    assert r["grad_cosine"] >= EXACT["cosine"], r
    assert r["grad_max_rel"] <= EXACT["rel"], r
    assert r["tokens_packed"] < 0.6 * r["tokens_unpacked"], r  # the prefixes are shared


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_forward_is_exact_on_the_tiny_model(attn: str) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model(), dtype=torch.float32, attn_implementation=attn
    )
    assert packing.unsupported_reason(model.config, 1024) is None
    _assert_exact(packing.check_exactness(model))


def test_tree_attention_reads_only_the_planned_keys_and_leaves_other_forwards_alone() -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    sdpa = AutoModelForCausalLM.from_pretrained(
        tiny_model(), dtype=torch.float32, attn_implementation="sdpa"
    )
    tree = copy.deepcopy(sdpa)
    assert packing.use_tree_attention(tree) and tree.config._attn_implementation == "creditgym_tree"
    seqs, starts = packing.demo_sequences(512)
    lay = packing.packed_layout(seqs, 96, query_block=16)
    # several query blocks per row, most of which see only part of the row
    width = lay.ids.shape[1]
    seen = [int(n) for _, m in lay.plan for n in (m[:, 0] == 0).any(1).sum(-1)]
    assert len(seen) > 2 * len(lay.plan) and min(seen) < width
    with torch.no_grad():
        a, _ = packing.score_tokens(tree, lay, seqs, starts)
        b, _ = packing.score_tokens(sdpa, lay, seqs, starts)  # sdpa over the whole masked row
        assert (a - b).abs().max() < 1e-5
        lay.plan = [((k + 1).clamp(max=width - 1), m) for k, m in lay.plan]  # the wrong keys
        c, _ = packing.score_tokens(tree, lay, seqs, starts)
        assert (c - b).abs().max() > 1e-3  # the plan is what the attention reads
        # without a plan (unpacked batches, generation) it is sdpa
        ids = torch.tensor([seqs[0][:20]])
        gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert torch.equal(tree.generate(ids, **gen), sdpa.generate(ids, **gen))
    eager = AutoModelForCausalLM.from_pretrained(tiny_model(), attn_implementation="eager")
    assert not packing.use_tree_attention(eager)  # eager models keep their full-row attention


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "mistral"])
def test_packed_forward_is_exact_on_other_decoders(kind: str) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    small = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **small))
    assert packing.unsupported_reason(model.config, 1024) is None
    _assert_exact(packing.check_exactness(model.float()))


def test_unsupported_models_are_named() -> None:
    from transformers import AutoConfig

    gpt2 = AutoConfig.for_model("gpt2")
    assert "model type 'gpt2'" in packing.unsupported_reason(gpt2, 1024)
    windowed = AutoConfig.for_model("mistral", sliding_window=256)
    assert "sliding window of 256" in packing.unsupported_reason(windowed, 1024)
    flash = AutoConfig.for_model("llama")
    flash._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in packing.unsupported_reason(flash, 1024)


def test_rows_share_prefixes_and_respect_the_cap() -> None:
    seqs = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 6], [7, 8], [1, 2, 3, 4]]
    lay = packing.packed_layout(seqs, row_tokens=64)
    # one tree: 1 2 3 4 | 5 | 6 | 7 8 ; the duplicate adds nothing
    assert lay.forwarded == 8 and lay.ids.shape == (1, 8)
    assert lay.cols[0] == lay.cols[4] and lay.cols[1][:3] == lay.cols[0][:3]
    assert lay.position_ids[0].tolist() == [0, 1, 2, 3, 3, 2, 0, 1]
    allowed = lay.attention_mask[0, 0] == 0
    assert allowed[4].nonzero().flatten().tolist() == [0, 1, 2, 4]  # "5" sees 1 2 3 and itself
    assert allowed[6].nonzero().flatten().tolist() == [6]  # "7" starts a new sequence
    assert packing.pack_rows(seqs, row_tokens=5) == [[0, 1], [2, 3], [4]]
    groups = packing.packed_micro_batches(seqs, max_tokens=8, row_tokens=5)
    assert sorted(j for g in groups for j in g) == list(range(5))


# ------------------------------------------------------------------------------ learner level
def _step(prompt: list[int], response: list[int], **kw) -> Step:
    return Step(
        state_key="s", action="a", reward=0.0, prompt_ids=prompt, response_ids=response, **kw
    )


def _groups(seed: int = 0, n_groups: int = 2, per_group: int = 6) -> list[TrajectoryGroup]:
    """Steps shaped like a steps-mode batch: a shared system prefix, a task per group, tails."""
    rng = np.random.default_rng(seed)

    def toks(n: int) -> list[int]:
        return rng.integers(5, 4000, n).tolist()

    system, groups = toks(30), []
    for _ in range(n_groups):
        task, trajs = toks(20), []
        for t in range(per_group // 2):
            first = _step(system + task + toks(3), toks(2 + t))
            second = _step(system + task + toks(8), toks(3))
            trajs.append(Trajectory(steps=[first, second]))
        groups.append(TrajectoryGroup(trajectories=trajs))
    return groups


def _params(learner: Learner) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in learner.model.parameters() if p.requires_grad])


def test_learner_packed_equals_unpacked(capsys) -> None:
    """prepare's log-probs, entropies and references, and an update's parameters, packed vs not.

    The parameters are compared after plain SGD steps, which move each parameter by lr times
    its gradient. Adam's first steps move a parameter by about lr x sign(gradient), so a
    gradient that is 0 up to float noise (LoRA's A right after B left 0) moves by +-lr on the
    side its noise falls: measured on one CPU, 8 of 32,768 parameters differed by 1.35e-3 under
    AdamW, with the gradients equal to a relative 1e-6. Gradient equality itself is
    `test_packed_gradient_matches_unpacked`."""
    cfg = dict(lr=1e-3, kl_coef=0.05, entropy_coef=0.01, mini_batches=2, micro_batch_tokens=256)
    results = []
    for pack in (False, True):
        torch.manual_seed(0)  # the same LoRA initialisation on both sides
        learner = Learner(LearnerConfig(packing=pack, pack_tokens=128, **cfg), tiny_model())
        assert bool(learner.pack_tokens) == pack
        trainable = [p for g in learner.optimizer.param_groups for p in g["params"]]
        learner.optimizer = torch.optim.SGD(trainable, lr=0.1)
        start = _params(learner).clone()
        groups = _groups()
        learner.update(groups, Advantages(values=np.linspace(-1, 1, 12)))  # leave the reference
        prep = learner.prepare(groups, {"entropies"})
        samples = learner._prepared[1]
        old = torch.cat([s.old_logp for s in samples])
        ref = torch.cat([s.ref_logp for s in samples])
        ent = np.concatenate([s.entropies for s in flat_steps(groups)])
        upd = learner.update(groups, Advantages(values=np.linspace(1, -1, 12)))
        results.append((old, ref, ent, _params(learner), prep, upd, start))
    (o0, r0, e0, p0, prep0, upd0, s0), (o1, r1, e1, p1, prep1, upd1, _) = results
    assert (o0 - o1).abs().max() <= 1e-5 and (r0 - r1).abs().max() <= 1e-5
    assert np.abs(e0 - e1).max() <= 1e-5
    assert (p0 - p1).abs().max() <= 1e-6  # after 4 SGD steps (2 updates x 2 mini-batches)
    assert (p0 - s0).abs().max() > 1e-4  # the steps moved the weights
    assert upd0["train/tokens"] == upd1["train/tokens"]
    assert upd1["train/pg_loss"] == pytest.approx(upd0["train/pg_loss"], abs=1e-5)
    # about half the tokens are shared prefixes
    assert prep1["train/prepare_tokens_forwarded"] < 0.6 * prep0["train/prepare_tokens_forwarded"]


def test_packed_gradient_matches_unpacked() -> None:
    grads = []
    for pack in (False, True):
        torch.manual_seed(0)  # the same LoRA initialisation on both sides
        learner = Learner(LearnerConfig(packing=pack, micro_batch_tokens=256), tiny_model())
        groups = _groups(seed=1)
        learner.prepare(groups, {"old_logprobs"})
        samples = learner._prepared[1]
        gen = torch.Generator().manual_seed(0)
        for s in samples:
            s.old_logp = s.old_logp + 0.3 * torch.randn(s.old_logp.shape, generator=gen)
        adv = Advantages(values=np.linspace(-1, 1, 12))
        mask, weight = adv.step_mask(), adv.step_weight()
        tokens_of = {
            id(s): (
                learner._token_advantages(s, adv),
                *learner._token_mask_and_weight(s, mask, weight),
            )
            for s in samples
        }
        sums = dict.fromkeys(
            ["pg", "kl", "entropy", "approx_kl", "value", "tis_clip", "tis_w"], 0.0
        )
        learner.optimizer.zero_grad(set_to_none=True)
        learner._backward_minibatch(samples, tokens_of, {}, sums)
        grads.append(
            torch.cat([p.grad.flatten() for p in learner.model.parameters() if p.requires_grad])
        )
    g0, g1 = (g.double() for g in grads)
    assert float(torch.nn.functional.cosine_similarity(g0, g1, dim=0)) >= 0.99999
    assert float((g0 - g1).abs().max() / g0.abs().max()) <= 1e-4


def test_unsupported_model_falls_back_with_a_notice(tmp_path, capsys) -> None:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model())
    GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok))
    ).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    learner = Learner(LearnerConfig(finetune="full", kl_coef=0.0), str(tmp_path))
    err = capsys.readouterr().err
    assert learner.pack_tokens == 0
    assert err.count("prefix packing off") == 1 and "'gpt2'" in err
    groups = _groups(per_group=2)
    assert (
        learner.update(groups, Advantages(values=np.array([1.0, -1.0, 0.5, -0.5])))["train/tokens"]
        > 0
    )


# ------------------------------------------------------------------------ no needless forward
def test_old_pass_is_deferred_into_the_update_exactly() -> None:
    """With nothing needed before credit, prepare skips the old pass; the update's first
    mini-batch scores itself. Parameters, metrics and Step.entropies match the forced pass."""
    out = []
    for force in (True, False):
        torch.manual_seed(0)
        learner = Learner(
            LearnerConfig(lr=1e-3, mini_batches=2, micro_batch_tokens=256), tiny_model()
        )
        groups = _groups(seed=2)
        prep = learner.prepare(groups, {"old_logprobs"} if force else set())
        assert learner._deferred is (not force)
        assert all((s.old_logp is None) is (not force) for s in learner._prepared[1])
        upd = learner.update(groups, Advantages(values=np.linspace(-1, 1, 12)))
        ent = np.concatenate([s.entropies for s in flat_steps(groups)])
        out.append((prep, upd, ent, _params(learner)))
    (prep_f, upd_f, ent_f, p_f), (prep_d, upd_d, ent_d, p_d) = out
    assert (p_f - p_d).abs().max() <= 1e-5  # Adam steps are ~lr = 1e-3
    assert np.abs(ent_f - ent_d).max() <= 1e-5
    assert upd_d["train/pg_loss"] == pytest.approx(upd_f["train/pg_loss"], abs=1e-6)
    assert upd_d["train/old_entropy"] == pytest.approx(prep_f["train/old_entropy"], abs=1e-5)
    # the saving: the first mini-batch's old log-probs came from the update's own forward
    fwd_f = prep_f["train/prepare_tokens_forwarded"] + upd_f["train/update_tokens_forwarded"]
    fwd_d = prep_d["train/prepare_tokens_forwarded"] + upd_d["train/update_tokens_forwarded"]
    assert fwd_d < fwd_f


def test_old_pass_runs_before_credit_when_needed() -> None:
    groups = _groups(seed=3, n_groups=1)
    learner = Learner(LearnerConfig(), tiny_model())
    learner.prepare(groups, {"entropies"})
    assert not learner._deferred and all(s.entropies is not None for s in flat_steps(groups))
    learner.old_pass_before_credit = True  # the async path's pi_prox
    learner.prepare(groups)
    assert not learner._deferred
    dropout = Learner(LearnerConfig(lora_dropout=0.1), tiny_model())
    dropout.prepare(groups)  # a training forward is not the no-grad pass's numbers
    assert not dropout._deferred
    decoupled = Learner(LearnerConfig(decoupled=True), tiny_model())
    decoupled.prepare(groups)
    assert not decoupled._deferred


def test_sampler_logprobs_as_pi_old() -> None:
    groups = _groups(seed=4, n_groups=1)
    rng = np.random.default_rng(0)
    for st in flat_steps(groups):
        st.sampler_logprobs = (-rng.random(len(st.response_ids)) - 5.0).tolist()
    learner = Learner(LearnerConfig(old_logprobs="sampler"), tiny_model())
    prep = learner.prepare(groups)
    samples = learner._prepared[1]
    want = torch.tensor([x for s in flat_steps(groups) for x in s.sampler_logprobs])
    assert torch.equal(torch.cat([s.old_logp for s in samples]), want.float())
    assert "train/logprob_mismatch_abs" not in prep  # measured in the update's first mini-batch
    upd = learner.update(groups, Advantages(values=np.linspace(-1, 1, 6)))
    assert upd["train/logprob_mismatch_abs"] > 0.5
    steps = flat_steps(groups)
    steps[0].sampler_logprobs = None
    with pytest.raises(ValueError, match="old_logprobs=sampler needs the backend's log-prob"):
        Learner(LearnerConfig(old_logprobs="sampler"), tiny_model()).prepare(groups)


def test_config_refuses_sampler_logprobs_in_async_mode() -> None:
    from creditgym.trainers.config import load_config

    assert load_config(None, ["learner.old_logprobs=sampler"]).learner.old_logprobs == "sampler"
    with pytest.raises(ValueError, match="old_logprobs must be one of"):
        load_config(None, ["learner.old_logprobs=behaviour"])
    with pytest.raises(ValueError, match="refused with rollout.mode='async'"):
        load_config(None, ["learner.old_logprobs=sampler", "rollout.mode=async"])


# ------------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_packed_forward_is_exact_on_smollm2() -> None:
    from transformers import AutoModelForCausalLM

    from creditgym.agents.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m"), dtype=torch.float32)
    assert packing.unsupported_reason(model.config, 1024) is None
    r = packing.check_exactness(copy.deepcopy(model))
    # Measured 1.05e-5 absolute on the log-probs of random tokens (float32 rounding of large
    # logits), just over 1e-5, and 1.8e-5 on their entropies (about 4 nats) with tree attention
    # in query blocks of 16; both are held to 1e-5 relative to max(1, |value|) instead.
    assert r["logp_max_abs"] <= 2e-5 and r["logp_max_rel"] <= 1e-5, r
    assert r["entropy_max_abs"] <= 3e-5 and r["entropy_max_rel"] <= 1e-5, r
    assert r["attention"] == "creditgym_tree", r
    _assert_exact(r | {"logp_max_abs": 0.0, "entropy_max_abs": 0.0})
