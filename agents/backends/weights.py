"""Weight export for engines that reload from disk (vLLM in-process or as a server).

vLLM reloads a safetensors folder in place in well under a second, while sending tensors over RPC
costs seconds, so a weight sync writes the learner's current weights (LoRA merged, plain Hugging
Face parameter names) to a folder with `export_weights` and has the engine reload from it.
`untie_model_folder` makes the served copy of a model with tied embeddings, whose output layer
vLLM would otherwise never refresh. Nothing here imports vLLM.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WEIGHTS_FILE", "export_weights", "untie_model_folder"]

#: File name of the exported weights (the name vLLM's safetensors loader looks for).
WEIGHTS_FILE = "model.safetensors"


def _merged_state(model: Any) -> Iterator[tuple[str, Any]]:
    """(plain HF name, tensor) for every weight of ``model``, LoRA deltas added in.

    A peft model is read without being modified: merging and unmerging in place would leave
    rounding drift in the base weights, which are also the KL reference.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # no peft, so no LoRA layers
        LoraLayer = ()  # noqa: N806

    deltas: dict[str, Any] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not getattr(module, "disable_adapters", False):
            merged = set(getattr(module, "merged_adapters", []))
            active = [
                a
                for a in module.active_adapters
                if a in getattr(module, "lora_A", {}) and a not in merged
            ]
            if active:
                deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in active)

    for key, tensor in base.state_dict().items():
        if "lora_" in key or ".original_module." in key:
            continue
        clean = key.replace(".base_layer.", ".")
        if ".modules_to_save." in clean:  # peft's trained copy of a whole module
            head, _, tail = clean.partition(".modules_to_save.")
            clean = f"{head}.{tail.split('.', 1)[1]}"
        if clean in deltas:
            tensor = tensor + deltas[clean].to(tensor.dtype)
        yield clean, tensor


def _embedding_key(names: Sequence[str]) -> str | None:
    """The input-embedding weight among checkpoint names (Llama/Qwen/Mistral/GPT-2 layouts)."""
    for suffix in ("embed_tokens.weight", "wte.weight", "word_embeddings.weight"):
        found = [n for n in names if n.endswith(suffix)]
        if len(found) == 1:
            return found[0]
    return None


def export_weights(
    source: Any, folder: str | os.PathLike[str], *, with_lm_head: bool = False
) -> Path:
    """Put ``source``'s current weights into ``folder`` as safetensors vLLM can reload.

    ``source`` is one of: a folder that already holds ``*.safetensors`` (used as it is, unless an
    ``lm_head.weight`` must be added); the learner (its ``model``, else ``save_merged(dir)``); a
    transformers or peft model (LoRA merged here). ``with_lm_head`` writes ``lm_head.weight``
    even for a model with tied embeddings (see `untie_model_folder`). Returns the folder to
    reload from. Files are written under a temporary name and renamed, so a reader never sees
    half a file.
    """
    out = Path(folder)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_dir() or not any(path.glob("*.safetensors")):
            raise FileNotFoundError(f"{path} is not a folder of *.safetensors weights")
        if with_lm_head and not _has_tensor(path, "lm_head.weight"):
            return _write_untied(path, out)
        return path
    out.mkdir(parents=True, exist_ok=True)
    inner = getattr(source, "model", None)
    if hasattr(source, "save_merged") and not hasattr(inner, "state_dict"):
        saved = Path(source.save_merged(str(out)))
        if with_lm_head and not _has_tensor(saved, "lm_head.weight"):
            return _write_untied(saved, out)
        return saved
    if hasattr(source, "save_merged"):
        source = inner
    if not hasattr(source, "state_dict"):
        raise TypeError(
            f"cannot export weights from {type(source).__name__}: pass a folder, the learner, "
            "or a transformers / peft model"
        )
    import torch

    config = getattr(source, "config", None)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, tensor in _merged_state(source):
            if tied and name == "lm_head.weight" and not with_lm_head:
                continue  # shared with the embedding; vLLM ties it itself
            tensors[name] = tensor.detach().to("cpu").contiguous().clone()
    if with_lm_head and "lm_head.weight" not in tensors:
        key = _embedding_key(list(tensors))
        if key is None:
            raise ValueError("cannot find the input embedding to write lm_head.weight from")
        tensors["lm_head.weight"] = tensors[key].clone()
    _save_tensors(tensors, out)
    return out


def _has_tensor(folder: Path, name: str) -> bool:
    from safetensors import safe_open

    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            if name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                return True
    return False


def _save_tensors(tensors: Mapping[str, Any], out: Path) -> None:
    from safetensors.torch import save_file

    tmp = out / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    save_file(dict(tensors), str(tmp), metadata={"format": "pt"})
    for stale in out.glob("*.safetensors*"):
        if stale.name != WEIGHTS_FILE and stale != tmp:
            stale.unlink()
    os.replace(tmp, out / WEIGHTS_FILE)


def _write_untied(src: Path, out: Path) -> Path:
    """Copy ``src``'s weights into ``out`` as one file that also holds ``lm_head.weight``."""
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for file in sorted(src.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    if "lm_head.weight" not in tensors:
        key = _embedding_key(list(tensors))
        if key is None:
            raise ValueError(f"cannot find the input embedding in {src} to write lm_head.weight")
        tensors["lm_head.weight"] = tensors[key].clone()
    out.mkdir(parents=True, exist_ok=True)
    _save_tensors(tensors, out)
    return out


def untie_model_folder(model_path: str, folder: str | os.PathLike[str]) -> str:
    """The folder vLLM should serve: ``model_path`` itself, or an untied copy in ``folder``.

    vLLM's in-place ``reload_weights`` does not refresh a tied output layer: after the
    embedding changes, the engine keeps sampling from the old ``lm_head`` (measured here: log-prob
    errors above 10 nats after one sync). For a local model with tied embeddings we therefore
    serve a copy whose config unties them and whose checkpoint holds an explicit
    ``lm_head.weight`` equal to the embedding: the same function, and every later reload
    updates both. Other models (and hub ids) are served as they are.
    """
    src = Path(model_path)
    config_file = src / "config.json"
    if not config_file.is_file():
        return model_path
    from transformers import AutoConfig

    if not getattr(AutoConfig.from_pretrained(str(src)), "tie_word_embeddings", False):
        return model_path
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and not item.name.endswith((".safetensors", ".bin", ".index.json")):
            shutil.copy2(item, out / item.name)
    config = json.loads(config_file.read_text())
    config["tie_word_embeddings"] = False
    text_config = config.get("text_config")
    if isinstance(text_config, dict) and "tie_word_embeddings" in text_config:
        text_config["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(config, indent=2))
    _write_untied(src, out)
    return str(out)
