"""Weight export for vLLM reloads (no engine needed): LoRA merged, plain names, tied heads."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from creditgym.agents.backends.vllm import WEIGHTS_FILE, export_weights, untie_model_folder
from creditgym.agents.models import tiny_model

EMBED = "model.embed_tokens.weight"


@pytest.fixture(scope="module")
def lora_model():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32)
    # init_lora_weights=False draws B at random too, so the adapter really changes the weights.
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(base, config)


def test_lora_export_equals_peft_merge_and_leaves_the_model_alone(lora_model, tmp_path):
    before = {k: v.clone() for k, v in lora_model.state_dict().items()}
    folder = export_weights(lora_model, tmp_path)
    exported = load_file(str(folder / WEIGHTS_FILE))

    merged = copy.deepcopy(lora_model).merge_and_unload().state_dict()
    merged.pop("lm_head.weight")  # tied to the embedding: vLLM ties it itself
    assert set(exported) == set(merged)
    assert not any("lora_" in k or "base_layer" in k for k in exported)
    for name, tensor in merged.items():
        torch.testing.assert_close(exported[name], tensor, rtol=0, atol=1e-6, msg=name)
    # The adapter made a difference, and exporting did not merge anything into the live model.
    plain = AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32).state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert (exported[q] - plain[q]).abs().max() > 1e-3
    after = lora_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lm_head_is_written_when_asked(lora_model, tmp_path):
    exported = load_file(
        str(export_weights(lora_model, tmp_path, with_lm_head=True) / WEIGHTS_FILE)
    )
    torch.testing.assert_close(exported["lm_head.weight"], exported[EMBED], rtol=0, atol=0)


def test_a_learner_is_exported_through_its_model(lora_model, tmp_path):
    class Learner:  # the parts of trainers.learner.Learner that export uses
        model = lora_model

        def save_merged(self, path: str) -> str:
            raise AssertionError("the in-memory model is exported directly")

    direct = load_file(str(export_weights(lora_model, tmp_path / "a") / WEIGHTS_FILE))
    via = load_file(str(export_weights(Learner(), tmp_path / "b") / WEIGHTS_FILE))
    assert set(direct) == set(via)
    assert all(torch.equal(direct[k], via[k]) for k in direct)


def test_save_merged_is_used_when_there_is_no_model(tmp_path):
    calls = []

    class Saver:
        def save_merged(self, path: str) -> str:
            calls.append(path)
            AutoModelForCausalLM.from_pretrained(tiny_model()).save_pretrained(path)
            return path

    folder = export_weights(Saver(), tmp_path, with_lm_head=True)
    assert calls == [str(tmp_path)]
    tensors = load_file(str(folder / WEIGHTS_FILE))
    torch.testing.assert_close(tensors["lm_head.weight"], tensors[EMBED], rtol=0, atol=0)


def test_folders_pass_through_and_bad_sources_are_refused(tmp_path):
    assert export_weights(tiny_model(), tmp_path / "x") == Path(tiny_model())
    with pytest.raises(FileNotFoundError, match="safetensors"):
        export_weights(str(tmp_path), tmp_path / "y")
    with pytest.raises(TypeError, match="cannot export"):
        export_weights(object(), tmp_path / "z")


def test_untied_copy_computes_the_same_function(tmp_path):
    src = tiny_model()
    served = Path(untie_model_folder(src, tmp_path))
    assert served == tmp_path
    assert json.loads((served / "config.json").read_text())["tie_word_embeddings"] is False
    assert (served / "tokenizer.json").is_file()
    tensors = load_file(str(served / WEIGHTS_FILE))
    torch.testing.assert_close(tensors["lm_head.weight"], tensors[EMBED], rtol=0, atol=0)

    ids = torch.tensor([[1, 20, 300, 4000]])
    a = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    b = AutoModelForCausalLM.from_pretrained(str(served), dtype=torch.float32)
    assert not b.config.tie_word_embeddings
    with torch.no_grad():
        torch.testing.assert_close(a(ids).logits, b(ids).logits, rtol=0, atol=1e-5)
    # An untied model is served as it is.
    assert untie_model_folder(str(served), tmp_path / "again") == str(served)
    assert not (tmp_path / "again").exists()
