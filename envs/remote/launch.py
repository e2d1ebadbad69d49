"""Start `scripts/serve_openenv.py` as a child process on a free 127.0.0.1 port (tests, benchmarks).

The server needs the ``openenv`` package, which cannot share the project venv (README, OpenEnv
section), so it runs under another interpreter: ``$CREDITGYM_OPENENV_PYTHON``, else this one if
it imports ``openenv``, else the repository's ``.venv-openenv`` (made by ``make install-openenv``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["OpenEnvServer", "free_port", "openenv_python"]

_REPO = Path(__file__).resolve().parents[2]
SCRIPT = _REPO / "scripts" / "serve_openenv.py"


def openenv_python() -> str | None:
    """An interpreter that can run the OpenEnv server, or None when none is installed."""
    named = os.environ.get("CREDITGYM_OPENENV_PYTHON")
    if named:
        return named
    if importlib.util.find_spec("openenv") is not None:
        return sys.executable
    venv = _REPO / ".venv-openenv" / "bin" / "python"
    return str(venv) if venv.exists() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpenEnvServer:
    """``with OpenEnvServer("creditgym/KeyRooms-v0", {"level": "small"}) as url: ...``

    Starts the server, waits for ``/health`` (up to `ready_timeout` s), yields its http:// URL and
    stops it (SIGTERM, then SIGKILL) on exit. `args` are extra command-line flags.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        *args: str,
        token: str | None = None,
        ready_timeout: float = 120.0,
    ):
        python = openenv_python()
        if python is None:
            raise RuntimeError("no interpreter with `openenv`: run `make install-openenv`")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.command = [
            python,
            str(SCRIPT),
            "--env",
            env_id,
            "--env-kwargs",
            json.dumps(env_kwargs or {}),
            "--port",
            str(self.port),
            *args,
        ]
        if token:
            self.command += ["--token", token]
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> str:
        self.log = tempfile.TemporaryFile(mode="w+")  # a pipe nobody reads could fill up
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the OpenEnv server exited ({self.process.returncode}):\n{self.output()}"
                )
            try:
                request = urllib.request.Request(self.url + "/health", headers=headers)
                with urllib.request.urlopen(request, timeout=2):
                    return self.url
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the OpenEnv server was not ready in {self.ready_timeout} s")

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def output(self) -> str:
        """What the server printed so far."""
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        """Stop the server process (idempotent)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
