"""The learner's memory estimate: its activation formula against autograd's saved tensors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from creditgym.agents.models import tiny_model
from creditgym.trainers import memory
from creditgym.trainers.learner import Learner, LearnerConfig


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("shape", [(4, 64), (1, 256)])
def test_activation_estimate_matches_the_saved_tensors(checkpointing, shape) -> None:
    """Within 15% on the tiny model (Llama blocks, tied head) for 8 scored tokens per row."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model())
    if checkpointing:
        model.gradient_checkpointing_enable()
    rows, length = shape
    ids = torch.randint(5, 1000, shape)
    measured = memory.measure_saved_bytes(model, ids, scored=8)
    parts = memory.activation_parts(
        model.config,
        rows * length,
        dtype_bytes=4,
        gradient_checkpointing=checkpointing,
        scored_tokens=8 * rows,
    )
    assert parts["saved"] == pytest.approx(measured, rel=0.15)
    assert (parts["recompute"] > 0) == checkpointing


def test_estimate_counts_parameters_gradients_optimizer_and_reference() -> None:
    learner = Learner(LearnerConfig(finetune="full", kl_coef=0.01, device="cpu"), tiny_model())
    est = memory.estimate_learner(learner)
    n = sum(p.numel() for p in learner.model.parameters())
    assert est.parameters == est.reference == est.gradients == 4 * n
    assert est.optimizer == 8 * n and est.device == "cpu" and est.device_total is None
    assert est.total == 4 * 4 * n + 8 * n // 2 + est.activations_per_micro_batch
    line = memory.format_estimate(est)
    assert line.startswith("learner memory estimate per rank (cpu, GiB): parameters")
    lora = memory.estimate_learner(Learner(LearnerConfig(device="cpu"), tiny_model()))
    assert lora.gradients < est.gradients and lora.reference == 0


def test_a_gpu_estimate_that_does_not_fit_says_so_and_shares_vllm_memory() -> None:
    cfg = AutoConfig.from_pretrained(tiny_model())
    fits = memory.estimate(cfg, parameters=10, trainable=10, dtype_bytes=2,
                           micro_batch_tokens=64, device="cuda", device_total=2**40)  # fmt: skip
    assert "WILL NOT FIT" not in memory.format_estimate(fits)
    assert memory.vllm_memory_fraction(fits) == pytest.approx(0.9, abs=1e-3)
    big = memory.estimate(cfg, parameters=2**40, trainable=2**40, dtype_bytes=2,
                          micro_batch_tokens=64, device="cuda", device_total=2**40)  # fmt: skip
    assert "WILL NOT FIT" in memory.format_estimate(big)
    assert memory.vllm_memory_fraction(big) == 0.05
    with pytest.raises(ValueError, match="needs a CUDA estimate"):
        memory.vllm_memory_fraction(memory.estimate(cfg, parameters=1, trainable=1,
                                                    dtype_bytes=4, micro_batch_tokens=64))  # fmt: skip
