"""`vllm-server`: vLLM's OpenAI-compatible server launched as a subprocess and driven over HTTP.

The served model is a small random Llama with the real SmolLM2 tokenizer (head size 32, the
smallest vLLM's CPU attention supports), so the server starts quickly; everything it returns is
checked against the Hugging Face forward pass of the same weights. Run under the big-memory
lock::

    flock /tmp/cg-bigmem.lock .venv/bin/pytest tests/agents/test_vllm_server.py
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from creditgym.agents.backends import make_backend
from creditgym.agents.backends.base import SamplingConfig
from creditgym.agents.backends.openai import OpenAIBackend
from creditgym.agents.backends.vllm import SERVED_NAME, VLLMServerBackend
from creditgym.agents.models import tiny_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    """A 2-layer random Llama (hidden 64, 2 heads of 32) with SmolLM2's tokenizer."""
    out = tmp_path_factory.mktemp("tiny32")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def server(model_path: str):
    backend = make_backend("vllm-server", model_path, max_model_len=512, kv_cache_gb=0.25)
    assert isinstance(backend, VLLMServerBackend)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf_model(model_path: str):
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()


def hf_logprobs(model: Any, prompt: Sequence[int], response: Sequence[int]) -> torch.Tensor:
    ids = torch.tensor([list(prompt) + list(response)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None])[:, 0]


PROMPTS = [[1, 504, 2088, 28], [1, 7, 8, 9, 10, 11], [1, 7, 8, 9, 10, 11]]


def test_server_samples_token_ids_and_policy_logprobs(server, hf_model):
    assert server.supports_training and server.token_mode
    assert server.model_name == SERVED_NAME and server.max_model_len == 512
    gens = server.generate(PROMPTS, SamplingConfig(max_new_tokens=12, seed=0))
    assert len(gens) == len(PROMPTS)
    for prompt, g in zip(PROMPTS, gens):
        assert len(g.token_ids) == len(g.logprobs) >= 1
        ref = hf_logprobs(hf_model, prompt, g.token_ids)
        assert torch.allclose(torch.tensor(g.logprobs), ref, atol=1e-3)
    assert gens[1].token_ids != gens[2].token_ids  # same prompt, own seeds


def test_weight_reload_over_http_changes_the_policy(server, hf_model, model_path):
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=10)
    before = [g.token_ids for g in server.generate(PROMPTS[:2], greedy)]

    moved = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every tensor, the (tied) embedding included
        for p in moved.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    seconds = server.sync_weights(moved)
    assert seconds > 0 and server.last_sync["reload"] > 0
    after = server.generate(PROMPTS[:2], greedy)
    assert [g.token_ids for g in after] != before
    for prompt, g in zip(PROMPTS, after):
        ref = hf_logprobs(moved, prompt, g.token_ids)
        assert torch.allclose(torch.tensor(g.logprobs), ref, atol=1e-3)

    server.sync_weights(model_path)
    assert [g.token_ids for g in server.generate(PROMPTS[:2], greedy)] == before


def test_a_plain_openai_client_detects_token_mode(server, model_path):
    client = OpenAIBackend(model_path, base_url=server.base_url)
    try:
        assert client.supports_training and client.model_name == SERVED_NAME
        gens = client.generate(PROMPTS[:1], SamplingConfig(max_new_tokens=5, seed=0))
        assert len(gens[0].token_ids) == len(gens[0].logprobs) >= 1
    finally:
        client.close()
    text = OpenAIBackend(model_path, base_url=server.base_url, probe=False)
    try:  # the same server used as a text endpoint: evaluation only
        gen = text.generate(PROMPTS[:1], SamplingConfig(max_new_tokens=5, seed=0))[0]
        assert gen.extras["retokenized"] and not text.supports_training
        with pytest.raises(RuntimeError, match="evaluation only"):
            text.sync_weights(model_path)
    finally:
        text.close()


def test_close_stops_the_server(model_path, server):
    server.close()
    assert server.process.poll() is not None
    assert not Path(server._served_dir.path).exists()
