"""`hf` backend: batched sampling with Hugging Face transformers, in-process, on the CPU.

Prompts arrive as token ids and are left-padded into one batch (per ``batch_size`` chunk).
Generation uses a fresh `GenerationConfig` that holds only our sampling options, so a model's
shipped defaults (top-k, repetition penalty, ...) never change the distribution silently: with
``temperature=1`` and ``top_p=1`` the tokens are drawn from exactly the policy the learner
trains. Each sampled token's log-probability is read from the processed scores of that step,
i.e. under the distribution it was actually drawn from.

The backend can share the learner's module (``learner=learner``, or ``model=learner.model``):
then `sync_weights(learner)` costs nothing, since generation already runs on the updated weights
(LoRA adapter included).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import torch

from creditgym.agents.backends.base import Generation, SamplingConfig, check_request


class HFBackend:
    """Generation with ``model.generate`` (float32 on the CPU, where it is twice as fast as bf16)."""

    supports_training = True

    def __init__(
        self,
        model_path: str | None = None,
        *,
        learner: Any = None,
        model: Any = None,
        tokenizer: Any = None,
        dtype: str = "float32",
        batch_size: int = 16,
    ):
        """Load ``model_path`` (a local HF folder), or use an already-loaded ``model``.

        With ``learner`` (an in-process `Learner`) the backend generates with the learner's own
        module and tokenizer unless ``model`` / ``tokenizer`` are given. ``batch_size`` caps how
        many prompts go through one ``generate`` call (memory bound).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if learner is not None:
            model = model if model is not None else learner.model
            tokenizer = tokenizer if tokenizer is not None else learner.tokenizer

        if model is None and model_path is None:
            raise ValueError("HFBackend needs model_path or model")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        if tokenizer is None:
            path = model_path or getattr(model, "name_or_path", None)
            tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        )
        self._calls = 0
        self.last_stats: dict[str, float] = {}

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig
    ) -> list[Generation]:
        """Sample one completion per prompt; return token ids, their log-probs and text."""
        check_request(prompts, sampling)
        out: list[Generation] = []
        t0 = time.perf_counter()
        seed = None if sampling.seed is None else sampling.seed + self._calls
        self._calls += 1
        rng = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
        was_training = self.model.training
        self.model.eval()
        try:
            with rng, torch.no_grad():
                if seed is not None:
                    torch.manual_seed(seed)
                for i in range(0, len(prompts), self.batch_size):
                    out.extend(self._generate_batch(prompts[i : i + self.batch_size], sampling))
        finally:
            self.model.train(was_training)
        elapsed = time.perf_counter() - t0
        n_tokens = sum(len(g.token_ids) for g in out)
        self.last_stats = {
            "seconds": elapsed,
            "tokens": float(n_tokens),
            "tok_per_s": n_tokens / elapsed if elapsed > 0 else 0.0,
        }
        return out

    def _generate_batch(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig
    ) -> list[Generation]:
        from transformers import GenerationConfig

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[row, width - len(p) :] = 1
        greedy = sampling.temperature <= 0
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=0 if not greedy else None,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            output_scores=True,
            return_dict_in_generate=True,
            stop_strings=list(sampling.stop) or None,
        )
        kwargs: dict[str, Any] = {"tokenizer": self.tokenizer} if sampling.stop else {}
        result = self.model.generate(
            input_ids=ids, attention_mask=mask, generation_config=config, **kwargs
        )
        new = result.sequences[:, width:]
        # Log-prob of each sampled token under the processed (temperature / top-p) distribution.
        logprobs = torch.stack(
            [
                torch.log_softmax(score.float(), dim=-1).gather(1, new[:, k : k + 1]).squeeze(1)
                for k, score in enumerate(result.scores)
            ],
            dim=1,
        )
        gens = []
        for row in range(len(prompts)):
            tokens = new[row].tolist()
            n, reason = self._cut(tokens, sampling.stop)
            gens.append(
                Generation(
                    token_ids=tokens[:n],
                    logprobs=logprobs[row, :n].tolist(),
                    text=self.tokenizer.decode(tokens[:n], skip_special_tokens=True),
                    finish_reason=reason,
                )
            )
        return gens

    def _cut(self, tokens: list[int], stop: Sequence[str]) -> tuple[int, str]:
        """How many tokens were really sampled, and why generation ended.

        After a row finishes, ``generate`` fills it with the pad id, which is often the EOS id,
        so the row is scanned: the first EOS is kept (the policy sampled it); a stop string ends
        the row at the token that completed it.
        """
        for k, tok in enumerate(tokens):
            if tok in self.eos_ids:
                return k + 1, "stop"
            if stop:
                text = self.tokenizer.decode(tokens[: k + 1], skip_special_tokens=True)
                if any(s in text for s in stop):
                    return k + 1, "stop"
        return len(tokens), "length"

    def sync_weights(self, learner: Any) -> float:
        """Generate with the learner's module (``learner.model``, or a module passed itself) from
        now on; free when it is the module already in use."""
        t0 = time.perf_counter()
        model = learner if isinstance(learner, torch.nn.Module) else getattr(learner, "model", None)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"hf sync_weights needs a learner (with .model) or a torch module, got "
                f"{type(learner).__name__}"
            )
        if model is not self.model:
            self.model = model
        return time.perf_counter() - t0

    def close(self) -> None:
        self.model = None


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if value is None:
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            if v not in ids:
                ids.append(int(v))
    if not ids:
        raise ValueError("the tokenizer has no EOS token; generation could never stop")
    return ids
