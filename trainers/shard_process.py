"""The ``process`` env backend: each shard is a spawned worker process (no Ray needed).

A worker is a fresh Python interpreter (``python -c ...``, started with `subprocess`, so it never
re-imports the trainer's main script the way ``multiprocessing``'s spawn does) talking over a
socket pair wrapped in `multiprocessing.connection.Connection`. The worker (`_serve`) holds a `ServedShard` and runs each call it receives on a thread of
its own, so the k envs of a shard step concurrently; results go back over a pipe as they finish.
Only picklable data crosses: call names, slots, actions, `SlotResult` and `EnvDescription`.

No worker outlives its trainer:

- the worker leads a session and process group of its own, and a kill (timeout, recycle, close) kills that
  group, so the servers, browsers and JVMs its envs started go with it;
- a worker whose pipe closes (the trainer exited or was killed) kills its group at once, and the
  kernel sends it SIGKILL when its parent dies (``PR_SET_PDEATHSIG``) should it miss that.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from creditgym.trainers.shard_remote import RemoteShard, ServedShard, WorkerLost
from creditgym.trainers.shards import EnvDescription, _one_line, register_shard

__all__ = ["ProcessShard"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):  # pragma: no cover
        return
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group() -> None:
    """SIGKILL this worker's process group: itself and everything its envs started."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.killpg(os.getpgid(0), signal.SIGKILL)


#: What a worker interpreter runs: ``python -c _BOOT <fd> <parent pid>``.
_BOOT = (
    "import sys; from creditgym.trainers.shard_process import _serve; "
    "_serve(int(sys.argv[1]), int(sys.argv[2]))"
)


def _serve(fd: int, parent_pid: int) -> None:
    """Entry point of a worker process: build the shard, then serve calls until told to stop."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        _kill_group()
    conn = Connection(fd)
    try:
        spec = conn.recv()
    except (EOFError, OSError):
        _kill_group()
    sys.path[:0] = [p for p in spec.pop("sys_path") if p not in sys.path]
    try:
        served = ServedShard(**spec)
    except BaseException as exc:
        conn.send(("failed", _one_line(exc)))
        return
    conn.send(("ready", served.description))
    send_lock = threading.Lock()
    threads = ThreadPoolExecutor(max_workers=served.inner.size + 1, thread_name_prefix="env")

    def run(call_id: int, method: str, calls: list[Any]) -> None:
        try:
            reply = (call_id, True, served.call(method, calls))
        except BaseException as exc:
            reply = (call_id, False, exc)
        with send_lock:
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return
            except Exception as exc:  # the result or the exception does not pickle
                conn.send((call_id, False, RuntimeError(_one_line(exc))))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            _kill_group()  # the trainer is gone: take everything down now
        if message[0] == "close":
            break
        threads.submit(run, *message)
    # A clean stop: close the envs (their servers, browsers, ...), then take down stragglers.
    closer = threading.Thread(target=served.close, daemon=True)
    closer.start()
    closer.join(timeout=float(message[1]))
    with contextlib.suppress(Exception), send_lock:
        conn.send(("closed", True, None))
    _kill_group()


@register_shard("process")
class ProcessShard(RemoteShard):
    """k envs in a spawned worker process; calls run concurrently there, one thread per env."""

    def __init__(self, env_id: str, size: int, split: str, env_kwargs: dict[str, Any], **options):
        self._proc: Any = None
        self._conn: Any = None
        self._send_lock = threading.Lock()
        self._futures: dict[int, Future] = {}
        self._call_ids = itertools.count()
        super().__init__(env_id, size, split, env_kwargs, **options)

    def _spawn(self) -> EnvDescription:
        mine, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        conn = Connection(mine.detach())
        self._proc, self._conn = proc, conn
        conn.send(
            {
                "env_id": self.env_id,
                "size": self.size,
                "split": self.split,
                "env_kwargs": self.env_kwargs,
                "step_latency_s": self.step_latency_s,
                # the worker imports what this process can (e.g. an env registered by a test)
                "sys_path": [p for p in sys.path if p],
            }
        )
        if not conn.poll(self.rebuild_timeout_s):
            raise TimeoutError(f"the worker did not start within {self.rebuild_timeout_s:g}s")
        try:
            status, payload = conn.recv()
        except (EOFError, OSError) as exc:
            code = proc.wait(timeout=5)
            raise WorkerLost(f"the worker exited while starting (code {code})") from exc
        if status != "ready":
            raise RuntimeError(payload)
        futures: dict[int, Future] = {}
        self._futures = futures
        threading.Thread(
            target=self._read, args=(conn, proc, futures), name="shard-reader", daemon=True
        ).start()
        return payload

    def _read(self, conn: Any, proc: Any, futures: dict[int, Future]) -> None:
        """Resolve the futures of one worker's calls as its replies arrive; fail the rest at EOF."""
        while True:
            try:
                call_id, ok, payload = conn.recv()
            except (EOFError, OSError, TypeError, ValueError):
                break
            if call_id == "closed":
                break
            fut = futures.pop(call_id, None)
            if fut is None:
                continue
            if ok:
                fut.set_result(payload)
            else:
                fut.set_exception(payload)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        reason = f"env worker process {proc.pid} exited (code {proc.returncode})"
        for call_id in list(futures):
            fut = futures.pop(call_id, None)
            if fut is not None and not fut.done():
                fut.set_exception(WorkerLost(reason))

    def _send(self, method: str, calls: list[Any]) -> Future:
        fut: Future = Future()
        call_id = next(self._call_ids)
        self._futures[call_id] = fut
        try:
            with self._send_lock:
                self._conn.send((call_id, method, calls))
        except (OSError, ValueError, AttributeError) as exc:
            self._futures.pop(call_id, None)
            fut.set_exception(WorkerLost(self._lost_reason(exc)))
        return fut

    def _lost_reason(self, exc: BaseException) -> str:
        """Why a send failed: the worker's exit code when it has exited (the same words the
        reader thread uses, whichever of the two notices first), else the send error."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
            if proc.returncode is not None:
                return f"env worker process {proc.pid} exited (code {proc.returncode})"
        return f"env worker unreachable: {_one_line(exc)}"

    def _kill(self, final: bool = False) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the worker leads its own group
            with contextlib.suppress(Exception):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _shutdown(self, grace_s: float = 10.0) -> None:
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        try:
            with self._send_lock:
                conn.send(("close", grace_s))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s + 5)
        finally:
            self._kill()

    def health(self) -> dict[str, Any]:
        health = super().health()
        health["backend"] = "process"
        return health
