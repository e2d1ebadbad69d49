"""Model resolution: local folders pass through, the tiny model is cached, builds are locked."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from creditgym.agents import models
from creditgym.agents.models import resolve_model, tiny_model


def test_local_folder_and_hub_id_pass_through(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(str(folder)) == str(folder.resolve())
    assert resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model(str(empty))
    with pytest.raises(ValueError, match="unknown model 'smollm3'.*smollm2-135m"):
        resolve_model("smollm3")


def test_tiny_model_is_a_cached_llama_with_the_smollm2_tokenizer() -> None:
    from transformers import AutoConfig, AutoTokenizer

    path = tiny_model()
    assert resolve_model("tiny") == path
    stamp = (Path(path) / "model.safetensors").stat().st_mtime_ns
    assert tiny_model() == path and (Path(path) / "model.safetensors").stat().st_mtime_ns == stamp
    config = AutoConfig.from_pretrained(path)
    assert config.num_hidden_layers == 2 and config.hidden_size == 64
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == config.vocab_size == 49152
    assert tok.eos_token == "<|im_end|>"
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered.startswith("<|im_start|>system")
    meta = json.loads((Path(path) / "creditgym_model.json").read_text())
    assert meta["seed"] == 0 and meta["version"]


def _slow_build(out: Path) -> None:
    counter = out.parent / "builds.txt"
    with counter.open("a") as f:
        f.write("x")
    time.sleep(0.5)
    (out / "config.json").write_text("{}")


def _build(folder: str) -> str:
    return str(models._build_once(Path(folder), _slow_build, {"what": "test"}))


def test_concurrent_callers_build_once(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        results = pool.map(_build, [str(folder)] * 3)
    assert results == [str(folder)] * 3
    assert (tmp_path / "builds.txt").read_text() == "x"
    assert (folder / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_failed_build_leaves_nothing_that_looks_finished(tmp_path: Path) -> None:
    folder = tmp_path / "model"

    def broken(out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        models._build_once(folder, broken, {})
    assert not folder.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert models._build_once(folder, _slow_build, {}) == folder


@pytest.mark.slow
def test_default_model_is_the_converted_smollm2() -> None:
    """Real conversion (about 20-100 s on first use, then cached) and a real answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model()
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == path
    config = json.loads((Path(path) / "config.json").read_text())
    assert "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert next(model.parameters()).dtype == torch.float32
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
