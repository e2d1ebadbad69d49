"""The `openai` backend against a real HTTP server that speaks the OpenAI completions protocol.

The server below is a test double at the edge: a stdlib HTTP server answering ``/v1/models``
and ``/v1/completions`` with the tiny model's real samples, and refusing token-id prompts with
400 the way an ordinary (non-vLLM) OpenAI-compatible server does. So the backend must detect
text mode, work for evaluation and refuse to train. Token mode is tested against vLLM's own
server in ``test_vllm_server.py``.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from creditgym.agents.backends import make_backend
from creditgym.agents.backends.base import SamplingConfig, prompt_seeds
from creditgym.agents.backends.openai import (
    EndpointError,
    OpenAIBackend,
    _token_ids_and_logprobs,
)
from creditgym.agents.models import tiny_model

SERVED = "tiny-text"


class _TextServer(ThreadingHTTPServer):
    """Serves the tiny model over HTTP; records requests; can fail on purpose."""

    daemon_threads = True

    def __init__(self, model_path: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.max_model_len = 2048

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("model") != SERVED:
            return 404, {"error": {"message": f"model {body.get('model')} not found"}}
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return 400, {"error": {"message": "prompt must be a string"}}
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with self.lock:
            torch.manual_seed(int(body.get("seed") or 0))
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=0,
                max_new_tokens=int(body["max_tokens"]),
                pad_token_id=self.tokenizer.eos_token_id,
            )
        new = out[0, ids.shape[1] :].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        reason = "length" if len(new) >= int(body["max_tokens"]) else "stop"
        return 200, {"choices": [{"index": 0, "text": text, "finish_reason": reason}]}


class _Handler(BaseHTTPRequestHandler):
    server: _TextServer

    def log_message(self, *args: Any) -> None:  # keep the test output quiet
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/v1/models":
            model = {"id": SERVED, "object": "model", "max_model_len": self.server.max_model_len}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append({"path": self.path, "body": body})
            failing = self.server.fail_next > 0
            self.server.fail_next -= int(failing)
        if failing:
            self._send(503, {"error": {"message": "overloaded, try again"}})
        elif self.path == "/v1/completions":
            self._send(*self.server.complete(body))
        else:
            self._send(404, {"error": {"message": "not found"}})


@pytest.fixture(scope="module")
def server():
    srv = _TextServer(tiny_model())
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def backend(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    b = OpenAIBackend(tiny_model(), base_url=url, retries=1)
    server.requests.clear()
    yield b
    b.close()


def _chat_prompts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    rendered = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
        )
        for t in texts
    ]
    return [tokenizer(r, add_special_tokens=False)["input_ids"] for r in rendered]


def test_text_endpoint_is_detected_and_evaluates(server, backend):
    assert backend.model_name == SERVED
    assert backend.max_model_len == server.max_model_len
    assert not backend.token_mode and not backend.supports_training
    prompts = _chat_prompts(backend.tokenizer, ["open the door", "go north", "go north"])
    gens = backend.generate(prompts, SamplingConfig(max_new_tokens=6, seed=3))
    assert len(gens) == 3
    sent = [r["body"] for r in server.requests]
    # The prompt went out as the decoded chat text, special tokens included.
    assert sorted(b["prompt"] for b in sent) == sorted(
        backend.tokenizer.decode(p, skip_special_tokens=False) for p in prompts
    )
    assert all(b["max_tokens"] == 6 and b["temperature"] == 1.0 for b in sent)
    for g in gens:
        assert g.extras["retokenized"] is True
        assert g.token_ids == backend.tokenizer.encode(g.text, add_special_tokens=False)
        assert len(g.logprobs) == len(g.token_ids) and all(math.isnan(x) for x in g.logprobs)
        assert g.finish_reason in ("stop", "length")
    # The two identical prompts got different seeds: a group's rollouts are not copies.
    seeds = [b["seed"] for b in sent]
    assert len(set(seeds)) == 3


def test_training_with_a_text_endpoint_fails_clearly(backend):
    with pytest.raises(RuntimeError, match="evaluation only"):
        backend.sync_weights(tiny_model())


def test_make_backend_builds_it(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    b = make_backend("openai", tiny_model(), base_url=url)
    try:
        assert isinstance(b, OpenAIBackend) and b.supports_training is False
    finally:
        b.close()


def test_server_errors_are_retried(server, backend):
    server.fail_next = 1
    prompts = _chat_prompts(backend.tokenizer, ["look"])
    gens = backend.generate(prompts, SamplingConfig(max_new_tokens=3))
    assert len(gens) == 1
    assert [r["path"] for r in server.requests] == ["/v1/completions", "/v1/completions"]


def test_server_errors_beyond_the_retries_are_raised(server, backend):
    server.fail_next = 5
    try:
        with pytest.raises(EndpointError, match="HTTP 503"):
            backend.generate([[1, 2, 3]], SamplingConfig(max_new_tokens=2))
    finally:
        server.fail_next = 0


def test_unknown_model_is_an_error_not_a_mode(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    with pytest.raises(EndpointError, match="HTTP 404"):
        OpenAIBackend(tiny_model(), base_url=url, model_name="no-such-model")


def test_unreachable_endpoint_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before anyone listens
    with pytest.raises(EndpointError, match="failed"):
        OpenAIBackend(base_url=f"http://127.0.0.1:{port}/v1", retries=0, timeout=5)


def test_base_url_is_required(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="base_url"):
        OpenAIBackend(tiny_model())


def test_text_mode_without_a_tokenizer_says_what_is_missing(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    b = OpenAIBackend(base_url=url)
    try:
        with pytest.raises(ValueError, match="model_path"):
            b.generate([[1, 2]], SamplingConfig(max_new_tokens=2))
    finally:
        b.close()


def test_prompts_that_cannot_fit_are_refused(server, backend):
    with pytest.raises(ValueError, match="no room"):
        backend.generate([[5] * server.max_model_len], SamplingConfig(max_new_tokens=4))
    with pytest.raises(ValueError, match="at least one token"):
        backend.generate([[]], SamplingConfig())
    assert backend.generate([], SamplingConfig()) == []
    assert server.requests == []


def test_token_replies_are_parsed_in_both_vllm_forms():
    ids_field = {"token_ids": [5, 6], "logprobs": {"token_logprobs": [-0.5, -1.5]}}
    assert _token_ids_and_logprobs(ids_field) == ([5, 6], [-0.5, -1.5])
    tokens_only = {
        "logprobs": {"tokens": ["token_id:7", "token_id:8"], "token_logprobs": [-1.0, -2.0]}
    }
    assert _token_ids_and_logprobs(tokens_only) == ([7, 8], [-1.0, -2.0])
    with pytest.raises(ValueError, match="no sampled token ids"):
        _token_ids_and_logprobs({"logprobs": {"tokens": ["hello"], "token_logprobs": [-1.0]}})


def test_prompt_seeds_are_distinct_and_reproducible():
    a = prompt_seeds(7, 0, 8)
    assert a == prompt_seeds(7, 0, 8)
    assert len(set(a)) == 8
    assert set(a).isdisjoint(prompt_seeds(7, 1, 8))
    assert all(0 <= s < 2**31 for s in a)
    assert prompt_seeds(None, 0, 3) == [None, None, None]
