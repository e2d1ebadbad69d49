"""Run untrusted Python in a subprocess with no network, a private file system view and limits.

`PythonSandbox.run(code)` never executes code in the calling process. It starts
``unshare --net --mount --pid --fork`` (Linux namespaces; needs root, which the project's machines
and CI have), whose PID 1 (`envs/tooluse/_sandbox_init.py`):

- gives the code a fresh size-limited tmpfs as its working directory (nothing persists; the host
  directory behind it is deleted afterwards) and remounts everything else read-only;
- runs it as an unprivileged uid of its own with limits on address space (memory), processes,
  CPU time, file size (which also bounds its output) and open files;
- has a network namespace with no usable interface, so any connection fails.

The parent enforces the wall-time limit by killing the whole process group (and with it the PID
namespace), and returns the output truncated to a character budget, with a clear ``error`` when a
limit was hit. Where the namespaces are unavailable, `run` raises `SandboxUnavailable` unless the
caller opted out with ``isolation="none"`` (then only the subprocess and its rlimits remain).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

_INIT = Path(__file__).with_name("_sandbox_init.py")
_UNSHARE = ("unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc")
ISOLATIONS = ("namespace", "none")


class SandboxUnavailable(RuntimeError):
    """The isolation the sandbox needs is not available on this machine."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run."""

    wall_time_s: float = 5.0
    """Wall-clock limit; the process tree is killed when it is exceeded."""
    memory_mb: int = 512
    """Address-space limit of each process (RLIMIT_AS)."""
    processes: int = 16
    """Processes and threads the sandbox uid may have at once (RLIMIT_NPROC)."""
    file_mb: int = 8
    """Largest file the code may write, which also caps stdout and stderr (RLIMIT_FSIZE)."""
    disk_mb: int = 32
    """Size of the tmpfs working directory."""
    max_output_chars: int = 4000
    """Characters of stdout (and of stderr) returned; the rest is cut with a marker."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {value}")


@dataclass(frozen=True)
class SandboxResult:
    """What a run produced. ``error`` is None for a clean exit, else a one-line explanation."""

    stdout: str
    stderr: str
    exit_code: int
    error: str | None
    timed_out: bool
    duration_s: float
    truncated: bool

    @property
    def ok(self) -> bool:
        return self.error is None


@functools.lru_cache(maxsize=1)
def isolation_problem() -> str | None:
    """Why namespace isolation is unavailable here (None when it works). Checked once."""
    if sys.platform != "linux":
        return f"Linux namespaces are needed, and this is {sys.platform}"
    if shutil.which("unshare") is None:
        return "the 'unshare' command (util-linux) is not installed"
    try:
        proc = subprocess.run(
            [*_UNSHARE, "true"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"'unshare' could not run: {exc}"
    if proc.returncode != 0:
        return f"'unshare' failed (it needs root): {proc.stderr.strip() or proc.returncode}"
    return None


def _read_cut(path: Path, limit: int) -> tuple[str, bool]:
    """The first `limit` characters of an output file, with a marker when there was more."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        text = fh.read(limit * 4 + 4).decode("utf-8", errors="replace")
    if len(text) <= limit and size <= limit * 4 + 4:
        return text, False
    return text[
        :limit
    ] + f"\n...[output truncated after {limit} characters; {size} bytes in all]", True


class PythonSandbox:
    """Runs Python source in an isolated, resource-limited subprocess (see the module docstring).

    ``isolation="namespace"`` (default) refuses to run without namespaces; ``isolation="none"``
    is the explicit opt-out that runs with rlimits and a temporary directory only.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        isolation: str = "namespace",
        python: str | None = None,
    ):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {list(ISOLATIONS)}, got {isolation!r}")
        self.limits = limits or SandboxLimits()
        self.isolation = isolation
        self.python = python or sys.executable

    def ro_paths(self) -> list[str]:
        """Host paths mirrored read-only into the sandbox: system directories and Python."""
        paths = ["/usr", "/bin", "/lib", "/lib32", "/lib64", "/sbin", "/etc/ld.so.cache"]
        for p in (sys.base_prefix, sys.prefix, os.path.dirname(self.python)):
            for q in (p, os.path.realpath(p)):
                if q not in paths and q != "/":
                    paths.append(q)
        return paths

    def check(self) -> None:
        """Raise `SandboxUnavailable` when this sandbox cannot run code safely here."""
        if self.isolation == "namespace":
            problem = isolation_problem()
            if problem:
                raise SandboxUnavailable(
                    f"the Python sandbox needs Linux namespaces and {problem}. Run as root on "
                    "Linux with util-linux installed, or opt out explicitly with "
                    "isolation='none' (code then runs without network or file-system isolation)."
                )

    def run(self, code: str) -> SandboxResult:
        """Execute `code` as a script; return its (truncated) output and what went wrong, if anything."""
        self.check()
        lim = self.limits
        base = Path(tempfile.mkdtemp(prefix="creditgym-sandbox-"))
        start = time.perf_counter()
        try:
            work = base / "work"
            work.mkdir()
            code_file = base / "code.py"
            code_file.write_text(code, encoding="utf-8")
            stdout_path, stderr_path = base / "stdout", base / "stderr"
            config = {
                "python": self.python,
                "ro_paths": self.ro_paths(),
                "uid": 100_000 + secrets.randbelow(60_000),
                "memory_mb": lim.memory_mb,
                "cpu_s": int(lim.wall_time_s) + 1,
                "processes": lim.processes,
                "file_mb": lim.file_mb,
                "disk_mb": lim.disk_mb,
            }
            if self.isolation == "namespace":
                os.chmod(base, 0o755)
                cmd = [
                    *_UNSHARE,
                    self.python,
                    "-I",
                    str(_INIT),
                    str(work),
                    str(code_file),
                    json.dumps(config),
                ]
                preexec = None
            else:
                shutil.copyfile(code_file, work / "main.py")
                cmd = [self.python, "-I", "main.py"]
                preexec = functools.partial(_unisolated_limits, config)
            with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=work,
                    start_new_session=True,
                    preexec_fn=preexec,
                    env=_clean_env(work),
                )
                timed_out = False
                try:
                    code_rc = proc.wait(timeout=lim.wall_time_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    code_rc = _stop(proc, namespaced=self.isolation == "namespace")
                if self.isolation == "none":
                    _kill_group(proc)  # whatever the program left behind in its session
            duration = time.perf_counter() - start
            stdout, cut_out = _read_cut(stdout_path, lim.max_output_chars)
            stderr, cut_err = _read_cut(stderr_path, lim.max_output_chars)
            error = _explain(code_rc, timed_out, stderr, lim, stdout_path, stderr_path)
            return SandboxResult(
                stdout, stderr, code_rc, error, timed_out, duration, cut_out or cut_err
            )
        finally:
            shutil.rmtree(base, ignore_errors=True)


def _clean_env(work: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


def _unisolated_limits(config: dict) -> None:
    """rlimits for the opt-out mode (runs in the child between fork and exec)."""
    import resource

    mem = config["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (config["cpu_s"], config["cpu_s"] + 1))
    fsize = config["file_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _stop(proc: subprocess.Popen, namespaced: bool) -> int:
    """Kill a run that overstayed, and return once all of its processes are gone.

    With namespaces, killing the namespace's PID 1 (unshare's child) makes the kernel kill and
    reap every process inside before that PID 1 exits; unshare then reaps it and exits itself.
    Killing unshare first would leave that teardown to the machine's init, asynchronously.
    """
    if namespaced:
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc)
    return proc.wait()


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _explain(rc: int, timed_out: bool, stderr: str, lim: SandboxLimits, *files: Path) -> str | None:
    """A one-line, human-readable reason for an unclean end (None for exit status 0)."""
    if timed_out:
        return f"wall-time limit exceeded: the code ran longer than {lim.wall_time_s:g} s and was killed"
    if rc == 0:
        return None
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
    if sig == signal.SIGXFSZ or any(f.stat().st_size >= lim.file_mb * 1024 * 1024 for f in files):
        return f"output limit exceeded: the code wrote more than {lim.file_mb} MB and was stopped"
    if sig == signal.SIGXCPU:
        return "CPU-time limit exceeded: the code was killed"
    if sig == signal.SIGKILL:
        return "the code was killed (SIGKILL), probably for using too much memory"
    if sig:
        return f"the code was killed by signal {signal.Signals(sig).name}"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if "MemoryError" in last:
        return f"memory limit exceeded ({lim.memory_mb} MB): {last}"
    if "BlockingIOError" in stderr and ("fork" in stderr or "Resource temporarily" in stderr):
        return f"process limit exceeded ({lim.processes} processes): {last}"
    if rc == 125 and "sandbox setup failed" in stderr:
        return f"the sandbox could not start: {last}"
    return f"exit status {rc}: {last}" if last else f"exit status {rc}"
