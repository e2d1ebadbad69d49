"""Several vLLM servers behind one backend (``backend.replicas`` / ``backend.num_replicas`` with
``vllm-server``; SCALE.md section 2).

`ReplicaSet` either connects to servers that are already running (``replicas``: their
``http://host:port/v1`` URLs, started with ``VLLM_SERVER_DEV_MODE=1``) or starts
``num_replicas`` servers itself (`creditgym.agents.backends.vllm.VLLMServerBackend`, one process
group each, stopped by `close` or at interpreter exit).

- **Routing.** Each prompt goes to the live replica with the fewest requests in flight (counting
  the ones this call has already placed). With sessions (the agent passes
  ``(env_id, episode, step)``) an episode sticks to the replica it started on, so the server's
  prefix cache is reused; step 0 starts a new episode and picks again.
- **Health.** A replica is taken out when a request to it fails (after the client's retries),
  when ``GET /health`` fails (checked every ``health_interval_s`` before routing, and before a
  weight sync), or when its weight sync fails. Its prompts are sent again to the others and its
  episodes re-pinned: a request that failed produced nothing, so nothing is sampled twice. The
  run goes on while one replica is live; with none left, `NoReplicaLeft` stops it and says why
  each was taken out.
- **Weights.** `sync_weights` exports the learner's weights once (`export_weights`, into a
  folder every server can read: the servers here, or a shared filesystem for remote ones), then
  for every live replica reloads them (``POST /collective_rpc`` ``reload_weights``), clears the
  prefix cache, sets the weight version (``POST /update_weight_version``) and reads it back
  (``GET /weight_info``). A replica serves again only when it reports the new version; one whose
  sync or check failed is taken out, so stale weights are never served.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from creditgym.agents.backends.base import Generation, SamplingConfig, check_request
from creditgym.agents.backends.openai import EndpointError, OpenAIBackend
from creditgym.agents.backends.weights import export_weights

__all__ = ["NoReplicaLeft", "Replica", "ReplicaSet"]


class NoReplicaLeft(RuntimeError):
    """Every generation replica has been taken out; the run cannot go on."""


@dataclass
class Replica:
    """One server: its client, whether it serves, and why it was taken out."""

    index: int
    client: OpenAIBackend
    #: The policy version it has loaded and reported (0: the weights it started with).
    version: int = 0
    live: bool = True
    reason: str | None = None
    in_flight: int = 0
    requests: int = 0
    #: The server process when this set started it (None for a URL).
    server: Any = None
    pinned: set[Hashable] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.client.base_url


class ReplicaSet:
    """Generation over several vLLM servers (see the module docstring)."""

    takes_sessions = True
    concurrent_generate = True

    def __init__(
        self,
        model_path: str | None = None,
        *,
        replicas: Sequence[str] = (),
        num_replicas: int = 1,
        learner: Any = None,
        tokenizer: Any = None,
        health_interval_s: float = 5.0,
        request_timeout: float = 600.0,
        retries: int = 1,
        export_lm_head: bool | None = None,
        **server_kwargs: Any,
    ):
        """Connect to ``replicas`` (URLs), or start ``num_replicas`` servers on ``model_path``.

        ``server_kwargs`` go to each started `VLLMServerBackend` (``max_model_len``,
        ``kv_cache_gb``, ...). ``retries`` is each client's extra attempts before its replica
        is taken out. ``export_lm_head`` makes weight exports carry ``lm_head.weight`` (needed
        when the servers serve an untied copy of a tied model, as the ones started here do;
        default: True for started servers, False for URLs).
        """
        del learner
        if replicas and server_kwargs:
            raise ValueError(
                f"options {sorted(server_kwargs)} start servers, but replicas lists running ones"
            )
        if not replicas and num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if replicas and num_replicas > 1:
            raise ValueError("give replicas (URLs of running servers) or num_replicas, not both")
        if health_interval_s < 0:
            raise ValueError(f"health_interval_s must be >= 0, got {health_interval_s}")
        self.health_interval_s = float(health_interval_s)
        self._lock = threading.Lock()
        self._sticky: dict[Hashable, Replica] = {}
        self._last_health = time.monotonic()
        self.version = 0
        self._sync_root = Path(tempfile.mkdtemp(prefix="creditgym-replicas-"))
        self.last_sync: dict[str, float] = {}
        self.last_stats: dict[str, float] = {}
        self.replicas: list[Replica] = []
        client_options = {"timeout": request_timeout, "retries": retries, "tokenizer": tokenizer}
        try:
            if replicas:
                for i, url in enumerate(replicas):
                    client = OpenAIBackend(model_path, base_url=url, **client_options)
                    self.replicas.append(Replica(i, client))
            else:
                self.replicas = self._start(model_path, num_replicas, client_options, server_kwargs)
        except BaseException:
            self.close()
            raise
        not_training = [r.url for r in self.replicas if not r.client.supports_training]
        if not_training:
            self.close()
            raise RuntimeError(f"replicas {not_training} do not return sampled token ids")
        self.supports_training = True
        if export_lm_head is None:
            export_lm_head = any(getattr(r.client, "_with_lm_head", False) for r in self.replicas)
        self.export_lm_head = bool(export_lm_head)
        self.max_model_len = min(
            (r.client.max_model_len for r in self.replicas if r.client.max_model_len),
            default=None,
        )
        self._pool = ThreadPoolExecutor(max(4, len(self.replicas)), thread_name_prefix="replica")

    @staticmethod
    def _start(
        model_path: str | None,
        n: int,
        client_options: dict[str, Any],
        server_kwargs: dict[str, Any],
    ) -> list[Replica]:
        """Start ``n`` servers side by side; if one fails, stop the others and raise."""
        from creditgym.agents.backends.vllm import VLLMServerBackend

        options = {**server_kwargs, **client_options}
        with ThreadPoolExecutor(n, thread_name_prefix="replica-start") as pool:
            futures = [pool.submit(VLLMServerBackend, model_path, **options) for _ in range(n)]
        servers, errors = [], []
        for f in futures:
            try:
                servers.append(f.result())
            except Exception as exc:
                errors.append(exc)
        if errors:
            for s in servers:
                with contextlib.suppress(Exception):
                    s.close()
            raise RuntimeError(f"{len(errors)} of {n} vLLM replicas failed to start: {errors[0]}")
        return [Replica(i, s, server=s) for i, s in enumerate(servers)]

    # ------------------------------------------------------------------ state
    @property
    def live(self) -> list[Replica]:
        """Replicas that serve: up, and holding the current weight version."""
        return [r for r in self.replicas if r.live and r.version == self.version]

    def take_out(self, replica: Replica, reason: str) -> None:
        """Stop routing to ``replica`` (for good) and re-pin its episodes."""
        with self._lock:
            if not replica.live:
                return
            replica.live, replica.reason = False, reason
            for key in replica.pinned:
                self._sticky.pop(key, None)
            replica.pinned.clear()

    def _check_left(self) -> None:
        if not self.live:
            why = "; ".join(f"{r.url}: {r.reason or 'stale weights'}" for r in self.replicas)
            raise NoReplicaLeft(f"no generation replica is left ({why})")

    def status(self) -> list[dict[str, Any]]:
        """Per replica: URL, live, version, requests served, why it was taken out."""
        return [
            {"url": r.url, "live": r.live, "version": r.version, "requests": r.requests}
            | {"reason": r.reason}
            for r in self.replicas
        ]

    # ------------------------------------------------------------------ health
    def _healthy(self, replica: Replica) -> str | None:
        """None when ``GET /health`` answers 200, else what went wrong."""
        if replica.server is not None and replica.server.process.poll() is not None:
            return f"server process exited with code {replica.server.process.returncode}"
        url = f"{replica.client.server_root}/health"
        try:
            with replica.client._opener.open(url, timeout=5) as resp:
                return None if resp.status == 200 else f"health check answered {resp.status}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            return f"health check failed: {exc}"

    def check_health(self) -> None:
        """Take out every live replica whose health check fails."""
        self._last_health = time.monotonic()
        live = [r for r in self.replicas if r.live]
        for replica, problem in zip(live, self._pool.map(self._healthy, live)):
            if problem is not None:
                self.take_out(replica, problem)

    # ------------------------------------------------------------------ generation
    def _route(self, sessions: Sequence[Hashable] | None, n: int) -> list[Replica]:
        """The replica of each prompt: its episode's, else the least loaded."""
        with self._lock:
            live = [r for r in self.replicas if r.live and r.version == self.version]
            if not live:
                return []
            placed: dict[int, int] = {}
            out = []
            for i in range(n):
                key, new = None, True
                if sessions is not None:
                    session = sessions[i]
                    if isinstance(session, tuple) and len(session) == 3:
                        key, new = session[:2], int(session[2]) == 0
                    else:
                        key, new = session, False
                chosen = None if key is None or new else self._sticky.get(key)
                if chosen is None or chosen not in live:
                    chosen = min(
                        live, key=lambda r: (r.in_flight + placed.get(r.index, 0), r.index)
                    )
                    if key is not None:
                        old = self._sticky.get(key)
                        if old is not None:
                            old.pinned.discard(key)
                        self._sticky[key] = chosen
                        chosen.pinned.add(key)
                placed[chosen.index] = placed.get(chosen.index, 0) + 1
                out.append(chosen)
            return out

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        sessions: Sequence[Hashable] | None = None,
    ) -> list[Generation]:
        """Sample one completion per prompt on the replicas (see the module docstring)."""
        check_request(prompts, sampling)
        if sessions is not None and len(sessions) != len(prompts):
            raise ValueError(f"{len(sessions)} sessions for {len(prompts)} prompts")
        if time.monotonic() - self._last_health >= self.health_interval_s:  # 0: every call
            self.check_health()
        t0 = time.perf_counter()
        out: list[Generation | None] = [None] * len(prompts)
        todo = list(range(len(prompts)))
        while todo:
            routes = self._route([sessions[i] for i in todo] if sessions else None, len(todo))
            if not routes:
                self._check_left()
            by_replica: dict[int, list[int]] = {}
            for i, replica in zip(todo, routes):
                by_replica.setdefault(replica.index, []).append(i)
            jobs = {
                index: self._pool.submit(
                    self._send, self.replicas[index], positions, prompts, sampling
                )
                for index, positions in by_replica.items()
            }
            todo = []
            for index, job in jobs.items():
                replica, positions = self.replicas[index], by_replica[index]
                try:
                    gens = job.result()
                except (EndpointError, OSError) as exc:
                    self.take_out(replica, f"request failed: {exc}")
                    todo.extend(positions)  # nothing was sampled: send them again elsewhere
                    continue
                for i, gen in zip(positions, gens):
                    out[i] = gen
            todo.sort()
        elapsed = time.perf_counter() - t0
        n_tokens = sum(len(g.token_ids) for g in out if g is not None)
        self.last_stats = {
            "seconds": elapsed,
            "tokens": float(n_tokens),
            "tok_per_s": n_tokens / elapsed if elapsed > 0 else 0.0,
        }
        return [g for g in out if g is not None]

    def _send(
        self,
        replica: Replica,
        positions: list[int],
        prompts: Sequence[Sequence[int]],
        sampling: SamplingConfig,
    ) -> list[Generation]:
        with self._lock:
            replica.in_flight += len(positions)
        try:
            gens = replica.client.generate([prompts[i] for i in positions], sampling)
        finally:
            with self._lock:
                replica.in_flight -= len(positions)
        replica.requests += len(positions)
        return gens

    # ------------------------------------------------------------------ weights
    def sync_weights(self, learner: Any) -> float:
        """Export ``learner`` once and load it on every live replica, checking each one's
        reported version; returns the seconds taken (``last_sync`` splits them)."""
        t0 = time.perf_counter()
        self.check_health()
        self._check_left()
        target = self.version + 1
        folder = export_weights(
            learner, self._sync_root / f"v{target}", with_lm_head=self.export_lm_head
        )
        t1 = time.perf_counter()
        live = [r for r in self.replicas if r.live]
        problems = list(self._pool.map(lambda r: self._load(r, folder, target), live))
        for replica, problem in zip(live, problems):
            if problem is None:
                replica.version = target
            else:
                self.take_out(replica, f"weight sync to version {target} failed: {problem}")
        self.version = target  # a replica still at an older version never serves again
        old = self._sync_root / f"v{target - 1}"
        shutil.rmtree(old, ignore_errors=True)
        self._check_left()
        t2 = time.perf_counter()
        self.last_sync = {"export": t1 - t0, "reload": t2 - t1, "total": t2 - t0}
        return t2 - t0

    @staticmethod
    def _load(replica: Replica, folder: Path, target: int) -> str | None:
        """Reload, clear the prefix cache, set and read back the version; None when it worked."""
        client, root = replica.client, replica.client.server_root
        try:
            client._request(
                "POST",
                f"{root}/collective_rpc",
                {"method": "reload_weights", "kwargs": {"weights_path": str(folder)}},
            )
            client._request("POST", f"{root}/reset_prefix_cache")
            client._request("POST", f"{root}/update_weight_version", {"new_version": str(target)})
            reported = (client._request("GET", f"{root}/weight_info") or {}).get("weight_version")
        except (EndpointError, OSError) as exc:
            return str(exc)
        if str(reported) != str(target):
            return f"the server reports weight version {reported!r}, expected {target}"
        return None

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop the servers this set started, the clients and the thread pool."""
        for replica in self.replicas:
            with contextlib.suppress(Exception):
                replica.client.close()  # a started server's close also stops its process
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._sync_root, ignore_errors=True)
