"""Run the shop as a child process on a free 127.0.0.1 port, shared by the envs of one process.

`ShopServer` starts ``python -m creditgym.envs.webshop.app --watch-parent`` and waits for its ready line.
The child dies with its owner three ways: `stop()` (called by the last env's `close()` and at
interpreter exit), EOF on its stdin pipe when the owner process dies however it dies, and a
re-parenting check. `ShopServer.shared(...)` hands every env of a process that asks for the same
catalog one refcounted server.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import ClassVar

_ROOT = str(Path(__file__).resolve().parents[2])


class ServerStartError(RuntimeError):
    """The shop process did not come up (its log is quoted in the message)."""


class ShopServer:
    """One shop process. `url` changes when it is restarted; `generation` counts restarts."""

    _shared: ClassVar[dict[tuple, ShopServer]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        n_products: int = 1000,
        seed: int = 0,
        data_path: str | None = None,
        startup_timeout: float = 600.0,
    ):
        self.spec = (int(n_products), int(seed), data_path)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.fingerprint = ""
        self.generation = 0
        self.refs = 0
        #: Only the process that started the server may stop it (a forked child must not).
        self.owner_pid = os.getpid()
        self._lock = threading.RLock()
        fd, self._log_path = tempfile.mkstemp(prefix="webshop-server-", suffix=".log")
        os.close(fd)
        self.start()
        atexit.register(self.stop)

    # ------------------------------------------------------------------ sharing
    @classmethod
    def shared(
        cls, n_products: int = 1000, seed: int = 0, data_path: str | None = None
    ) -> ShopServer:
        """The process-wide server for this catalog, started on first use; call `release()`."""
        key = (int(n_products), int(seed), data_path)
        with cls._shared_lock:
            server = cls._shared.get(key)
            if server is None or server.owner_pid != os.getpid():  # fresh in a forked child
                server = cls(n_products, seed, data_path)
                cls._shared[key] = server
            server.refs += 1
            return server

    def release(self) -> None:
        """Drop one reference; the last one stops the process."""
        with ShopServer._shared_lock:
            self.refs -= 1
            if self.refs <= 0:
                if ShopServer._shared.get(self.spec) is self:
                    del ShopServer._shared[self.spec]
                self.stop()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        if self.proc is None:
            return False
        if self.owner_pid != os.getpid():  # a forked child cannot wait on it; ask the OS
            try:
                os.kill(self.proc.pid, 0)
                return True
            except OSError:
                return False
        return self.proc.poll() is None

    def start(self) -> None:
        """Start the process and block until it serves (or raise `ServerStartError`)."""
        with self._lock:
            if self.alive():
                return
            n, seed, data_path = self.spec
            cmd = [
                sys.executable,
                "-m",
                "creditgym.envs.webshop.app",
                "--n-products",
                str(n),
                "--seed",
                str(seed),
                "--port",
                "0",
                "--watch-parent",
                "--log-file",
                self._log_path,
            ]
            if data_path:
                cmd += ["--data-path", str(data_path)]
            env = dict(os.environ)
            env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
            with open(self._log_path, "a") as log:  # the child keeps its own copy of the fd
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    cwd=_ROOT,
                    text=True,
                    close_fds=True,
                )
            lines: queue.Queue[str | None] = queue.Queue()
            proc = self.proc

            def pump() -> None:
                stream = proc.stdout
                assert stream is not None
                try:
                    for line in stream:
                        lines.put(line)
                except (OSError, ValueError):
                    pass
                finally:
                    lines.put(None)
                    stream.close()

            threading.Thread(target=pump, daemon=True).start()
            while True:
                try:
                    line = lines.get(timeout=self.startup_timeout)
                except queue.Empty:
                    self._kill()
                    raise ServerStartError(
                        f"shop server not ready in {self.startup_timeout}s{self._log_tail()}"
                    ) from None
                if line is None:
                    self._kill()
                    raise ServerStartError(f"shop server exited during startup{self._log_tail()}")
                if line.startswith("WEBSHOP-READY"):
                    _, port, fingerprint = line.split()
                    self.port, self.fingerprint = int(port), fingerprint
                    self.generation += 1
                    return

    def healthy(self, timeout: float = 5.0) -> bool:
        """Whether the process runs and answers ``/health`` with our catalog's fingerprint."""
        if not self.alive():
            return False
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            return resp.status == 200 and json.loads(resp.read())["fingerprint"] == self.fingerprint
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def restart(self) -> None:
        """Replace the process unless it is healthy (a no-op when another env already did).

        A process that is dying (killed, but its threads still exiting) or hung counts as
        unhealthy: it is killed and a new one started.
        """
        with self._lock:
            if not self.healthy():
                self._kill()
                self.start()

    def stop(self) -> None:
        """Stop the process, wait for it to exit, and remove its log."""
        with self._lock:
            self._kill()
            with contextlib.suppress(OSError):
                os.unlink(self._log_path)

    def _kill(self) -> None:
        if self.owner_pid != os.getpid():
            return  # inherited through fork: the parent owns this process
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass

    def _log_tail(self) -> str:
        try:
            text = Path(self._log_path).read_text()[-2000:]
        except OSError:
            return ""
        return f"; server log:\n{text}" if text else ""
