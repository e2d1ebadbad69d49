"""`openai` backend: sampling through any OpenAI-compatible ``/v1/completions`` endpoint.

Prompts arrive as token ids (already rendered with the chat template), so the backend talks to
the plain completions API, one HTTP request per prompt, sent concurrently so that a batching
server (vLLM, SGLang, TGI, llama.cpp) sees the whole batch at once.

Two modes, chosen by probing the endpoint once at start-up:

- **token mode** (vLLM's server): the prompt is sent as token ids and the server returns the
  sampled token ids (``return_token_ids``, ``return_tokens_as_token_ids``) and their log-probs.
  Nothing is re-tokenised, so the output can be trained on: ``supports_training = True``.
- **text mode** (any other server): the prompt is decoded to text with the local tokenizer and
  the reply is re-encoded. The ids are then only an estimate of what the server sampled and
  there are no sampler log-probs, so the backend is for evaluation only:
  ``supports_training = False``, and `sync_weights` (which a training loop calls after every
  update) raises a clear error.

Weight sync (token mode only) uses vLLM's development endpoint ``POST /collective_rpc`` with
``reload_weights`` from a folder on a filesystem the server can read, then resets the server's
prefix cache so no KV computed with the old weights is reused. A server started without
``VLLM_SERVER_DEV_MODE=1`` has no such endpoint and sync fails with an explanation.

Only the standard library is used for HTTP, so this backend adds no dependency.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from creditgym.agents.backends.base import Generation, SamplingConfig, check_request, prompt_seeds
from creditgym.agents.backends.weights import export_weights

#: Environment variables read when ``base_url`` / ``api_key`` are not given.
BASE_URL_ENV = "OPENAI_BASE_URL"
API_KEY_ENV = "OPENAI_API_KEY"
_TOKEN_PREFIX = "token_id:"


class EndpointError(RuntimeError):
    """The endpoint answered with an error, or could not be reached."""


class OpenAIBackend:
    """Generation through an OpenAI-compatible completions endpoint (see the module docstring)."""

    #: Set by the start-up probe: True only when the endpoint returns sampled token ids.
    supports_training: bool
    #: ``generate`` may run in many threads at once (each call's requests go out concurrently).
    concurrent_generate = True

    def __init__(
        self,
        model_path: str | None = None,
        *,
        base_url: str | None = None,
        model_name: str | None = None,
        api_key: str | None = None,
        tokenizer: Any = None,
        learner: Any = None,
        timeout: float = 600.0,
        max_concurrency: int = 32,
        retries: int = 2,
        probe: bool = True,
    ):
        """Connect to ``base_url`` (default ``$OPENAI_BASE_URL``, e.g. ``http://host:8000/v1``).

        Args:
            model_path: a local HF folder whose tokenizer matches the served model; needed only
                in text mode (to decode prompts and re-encode replies).
            model_name: the served model name; default: the first one ``GET /models`` lists.
            api_key: sent as a bearer token (default ``$OPENAI_API_KEY``; none if unset).
            tokenizer: an already-loaded tokenizer (instead of loading one from model_path).
            learner: unused (the server holds its own weights; `sync_weights` exports the
                learner's and has the server reload them).
            timeout: seconds one HTTP request may take.
            max_concurrency: how many requests are in flight at once.
            retries: extra attempts for a request that failed to connect or got a 5xx.
            probe: detect token mode now; False assumes text mode without asking the server.
        """
        del learner
        base_url = base_url or os.environ.get(BASE_URL_ENV)
        if not base_url:
            raise ValueError(
                f"backend 'openai' needs base_url (or ${BASE_URL_ENV}), e.g. http://127.0.0.1:8000/v1"
            )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        # A local server is never reached through an HTTP proxy set in the environment.
        local = host in ("127.0.0.1", "localhost", "::1")
        self._opener = urllib.request.build_opener(
            *([urllib.request.ProxyHandler({})] if local else [])
        )
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.model_path = model_path
        self.timeout = timeout
        self.retries = retries
        self._tokenizer = tokenizer
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai")
        self._calls = 0
        self._sync_dir: Path | None = None
        #: Whether exports must carry lm_head.weight (the server serves an untied copy).
        self._with_lm_head = False
        self.last_stats: dict[str, float] = {}
        self.last_sync: dict[str, float] = {}
        self.max_model_len: int | None = None
        self.model_name = model_name or self._first_model()
        self.token_mode = self._probe() if probe else False
        self.supports_training = self.token_mode

    # ------------------------------------------------------------------ HTTP

    @property
    def server_root(self) -> str:
        """The server's root URL (``base_url`` without a trailing ``/v1``)."""
        root = self.base_url
        return root[: -len("/v1")] if root.endswith("/v1") else root

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """One JSON request with retries on connection failures and 5xx answers."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw.strip() else None
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:500]
                err = EndpointError(f"{method} {url} -> HTTP {exc.code}: {detail}")
                err.status = exc.code  # type: ignore[attr-defined]
                if exc.code < 500:
                    raise err from None
                last = err
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last = EndpointError(f"{method} {url} failed: {exc}")
            if attempt < self.retries:
                time.sleep(0.5 * 2**attempt)
        assert last is not None
        raise last

    def _first_model(self) -> str:
        listing = self._request("GET", f"{self.base_url}/models")
        models = (listing or {}).get("data") or []
        if not models:
            raise EndpointError(f"{self.base_url}/models lists no model; pass model_name=")
        first = models[0]
        if first.get("max_model_len"):
            self.max_model_len = int(first["max_model_len"])
        return str(first["id"])

    def _probe(self) -> bool:
        """True when the endpoint takes token-id prompts and returns the sampled token ids."""
        body = {
            "model": self.model_name,
            "prompt": [0],
            "max_tokens": 1,
            "temperature": 1.0,
            **_TOKEN_FIELDS,
        }
        try:
            reply = self._request("POST", f"{self.base_url}/completions", body)
        except EndpointError as exc:
            if getattr(exc, "status", None) in (400, 422):
                return False  # the server rejected token-id prompts or vLLM's extra fields
            raise  # unreachable, unauthorised, unknown model: not a question of capabilities
        try:
            choice = reply["choices"][0]
            ids, logprobs = _token_ids_and_logprobs(choice)
        except (KeyError, IndexError, TypeError, ValueError):
            return False
        return len(ids) == len(logprobs) >= 1

    # ------------------------------------------------------------ generation

    @property
    def tokenizer(self) -> Any:
        """The local tokenizer (text mode); loaded from ``model_path`` on first use."""
        if self._tokenizer is None:
            if self.model_path is None:
                raise ValueError(
                    f"the endpoint {self.base_url} cannot take token ids, so backend 'openai' "
                    "needs model_path= (a local HF folder with the served model's tokenizer) "
                    "to decode prompts"
                )
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig
    ) -> list[Generation]:
        """Sample one completion per prompt (concurrent requests, one per prompt).

        With a seed, prompt ``i`` of call ``c`` gets its own seed derived from
        ``(seed, c, i)``: identical prompts in a group still draw different samples, and a rerun
        draws the same ones.
        """
        check_request(prompts, sampling)
        if not prompts:
            return []
        seeds = prompt_seeds(sampling.seed, self._calls, len(prompts))
        self._calls += 1
        t0 = time.perf_counter()
        bodies = [self._body(p, sampling, s) for p, s in zip(prompts, seeds)]
        replies = list(self._pool.map(self._complete, bodies))
        out = [self._parse(r) for r in replies]
        elapsed = time.perf_counter() - t0
        n_tokens = sum(len(g.token_ids) for g in out)
        self.last_stats = {
            "seconds": elapsed,
            "tokens": float(n_tokens),
            "tok_per_s": n_tokens / elapsed if elapsed > 0 else 0.0,
        }
        return out

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", f"{self.base_url}/completions", body)

    def _body(
        self, prompt: Sequence[int], sampling: SamplingConfig, seed: int | None
    ) -> dict[str, Any]:
        max_tokens = sampling.max_new_tokens
        if self.max_model_len is not None:
            room = self.max_model_len - len(prompt)
            if room < 1:
                raise ValueError(
                    f"a prompt of {len(prompt)} tokens leaves no room to generate within the "
                    f"served model's context of {self.max_model_len} tokens; shorten the prompt "
                    "(e.g. a smaller history_length or max_prompt_tokens)"
                )
            max_tokens = min(max_tokens, room)
        body: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": max_tokens,
            "temperature": max(sampling.temperature, 0.0),
            "top_p": sampling.top_p,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if seed is not None:
            body["seed"] = seed
        if self.token_mode:
            body["prompt"] = [int(t) for t in prompt]
            body.update(_TOKEN_FIELDS)
            body["include_stop_str_in_output"] = True
        else:
            body["prompt"] = self.tokenizer.decode(list(prompt), skip_special_tokens=False)
        return body

    def _parse(self, reply: dict[str, Any]) -> Generation:
        try:
            choice = reply["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"malformed completion reply: {str(reply)[:300]}") from None
        text = choice.get("text") or ""
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        if self.token_mode:
            ids, logprobs = _token_ids_and_logprobs(choice)
            if len(ids) != len(logprobs):
                raise EndpointError(
                    f"the endpoint returned {len(ids)} token ids but {len(logprobs)} log-probs"
                )
            return Generation(
                ids, logprobs, text, reason, {"stop_reason": choice.get("stop_reason")}
            )
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        return Generation(ids, [math.nan] * len(ids), text, reason, {"retokenized": True})

    # ----------------------------------------------------------- weight sync

    def sync_weights(self, learner: Any) -> float:
        """Reload the server's weights from ``learner`` (the learner, a module or a folder).

        Raises when the endpoint is evaluation-only (text mode) or has no ``/collective_rpc``.
        """
        if not self.supports_training:
            raise RuntimeError(
                f"backend 'openai' at {self.base_url} cannot return sampled token ids, so it is "
                "for evaluation only and cannot train; use backend hf, vllm or vllm-server"
            )
        t0 = time.perf_counter()
        if self._sync_dir is None:
            self._sync_dir = Path(tempfile.mkdtemp(prefix="creditgym-sync-"))
        folder = export_weights(learner, self._sync_dir, with_lm_head=self._with_lm_head)
        t1 = time.perf_counter()
        try:
            self._request(
                "POST",
                f"{self.server_root}/collective_rpc",
                {"method": "reload_weights", "kwargs": {"weights_path": str(folder)}},
            )
        except EndpointError as exc:
            if getattr(exc, "status", None) == 404:
                raise RuntimeError(
                    f"{self.server_root} has no /collective_rpc, so its weights cannot be "
                    "reloaded: start vLLM with VLLM_SERVER_DEV_MODE=1 (backend vllm-server does)"
                ) from exc
            raise
        self._request("POST", f"{self.server_root}/reset_prefix_cache")
        t2 = time.perf_counter()
        self.last_sync = {"export": t1 - t0, "reload": t2 - t1, "total": t2 - t0}
        return t2 - t0

    def close(self) -> None:
        """Stop the request threads and delete exported weights."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._sync_dir is not None:
            shutil.rmtree(self._sync_dir, ignore_errors=True)
            self._sync_dir = None


#: vLLM's request fields that make it return the sampled ids and their log-probs.
_TOKEN_FIELDS: dict[str, Any] = {
    "logprobs": 0,
    "return_token_ids": True,
    "return_tokens_as_token_ids": True,
}


def _token_ids_and_logprobs(choice: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The sampled ids (``token_ids``, else parsed from ``token_id:N`` tokens) and log-probs."""
    lp = choice.get("logprobs") or {}
    logprobs = [float(x) for x in lp.get("token_logprobs") or []]
    ids = choice.get("token_ids")
    if ids is None:
        tokens = lp.get("tokens") or []
        if not tokens or not all(str(t).startswith(_TOKEN_PREFIX) for t in tokens):
            raise ValueError("the reply carries no sampled token ids")
        ids = [int(str(t)[len(_TOKEN_PREFIX) :]) for t in tokens]
    return [int(t) for t in ids], logprobs
