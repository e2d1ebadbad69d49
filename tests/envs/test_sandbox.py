"""The Python sandbox against escape attempts and resource abuse; the env keeps working after."""

import dataclasses
import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from creditgym.envs.tooluse import PythonSandbox, SandboxLimits, SandboxUnavailable, ToolUseEnv
from creditgym.envs.tooluse import sandbox as sb

# A wall time far above what the abuse tests need, so that a loaded machine (2 cores shared with
# other work) never turns a memory or fork bomb into a timeout; the wall-time test uses its own
# short limit.
LIMITS = SandboxLimits(
    wall_time_s=20.0, memory_mb=256, processes=8, file_mb=1, max_output_chars=500
)
SHORT = dataclasses.replace(LIMITS, wall_time_s=1.0)

pytestmark = pytest.mark.skipif(
    sb.isolation_problem() is not None, reason=f"no namespaces here: {sb.isolation_problem()}"
)


def _sandbox_uid_processes() -> list[int]:
    """Processes running as a sandbox uid (100000-159999)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            if 100_000 <= uid < 160_000:
                pids.append(int(entry))
    return pids


def _leftover_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("creditgym-sandbox-*")}


@pytest.fixture(scope="module")
def box():
    return PythonSandbox(LIMITS)


def _run(box, code):
    before = _leftover_dirs()
    start = time.perf_counter()
    result = box.run(code)
    elapsed = time.perf_counter() - start
    assert elapsed < box.limits.wall_time_s + 10, f"took {elapsed:.2f} s"
    assert _leftover_dirs() <= before, "the temporary directory was removed"
    assert _sandbox_uid_processes() == [], "no process of the sandbox survives"
    return result


def test_runs_code_and_returns_output(box):
    r = _run(box, "import os, sys\nprint(6 * 7)\nprint(os.getcwd(), os.getuid() >= 100000)")
    assert r.ok and r.exit_code == 0 and r.stdout == "42\n/sandbox True\n" and not r.truncated


def test_infinite_loop_is_killed_at_the_wall_time():
    r = _run(PythonSandbox(SHORT), "while True:\n    pass")
    assert r.timed_out and "wall-time limit exceeded" in r.error
    assert r.duration_s >= SHORT.wall_time_s


def test_memory_bomb(box):
    r = _run(box, "chunks = []\nwhile True:\n    chunks.append(bytearray(50_000_000))")
    assert "memory limit exceeded (256 MB)" in r.error and "MemoryError" in r.stderr


def test_fork_bomb_is_bounded(box):
    r = _run(box, "import os\nwhile True:\n    os.fork()")
    assert "process limit exceeded (8 processes)" in r.error


def test_sleeping_children_die_with_the_program(box):
    code = "import os, time\nfor _ in range(5):\n    if os.fork() == 0:\n        time.sleep(60)\nprint('parent done')"
    r = _run(box, code)
    assert r.ok and "parent done" in r.stdout


def test_writing_outside_the_work_dir_fails(box):
    target = Path(tempfile.gettempdir()) / "creditgym-escape-test.txt"
    target.unlink(missing_ok=True)
    for path in (str(target), "/etc/creditgym-escape", "/usr/escape.txt"):
        r = _run(box, f"open({path!r}, 'w').write('x')")
        assert "Read-only file system" in r.error or "No such file" in r.error, r.error
    assert not target.exists()
    # The host's files are not visible at all (only system and Python directories are mounted).
    r = _run(box, f"print(open({str(Path(__file__).resolve())!r}).read())")
    assert "No such file or directory" in r.error
    # Inside the work dir writing works, within the disk quota.
    r = _run(box, "open('a.txt', 'w').write('hello')\nprint(open('a.txt').read())")
    assert r.ok and r.stdout == "hello\n"


_INTERFACES = r"""
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _, name in socket.if_nameindex():
    req = fcntl.ioctl(s.fileno(), 0x8913, struct.pack("16sH14x", name.encode(), 0))  # SIOCGIFFLAGS
    print(name, "up" if struct.unpack("16sH14x", req)[1] & 1 else "down")
"""


def test_network_namespace_has_only_a_down_loopback(box):
    """Nothing is sent anywhere: the sandbox lists its own interfaces."""
    r = _run(box, _INTERFACES)
    assert r.ok and r.stdout == "lo down\n", (r.stdout, r.error)


def test_a_listener_on_the_hosts_loopback_is_unreachable(box):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        r = _run(box, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
        assert "Network is unreachable" in r.error, r.error
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection ever arrived


def test_name_resolution_fails_without_a_resolver(box):
    # The resolution runs only once the script has seen that no resolver config or hosts file is
    # visible, so the lookup can reach nothing but the namespace's own (down) loopback.
    code = (
        "import os, socket\n"
        "seen = [p for p in ('/etc/resolv.conf', '/etc/hosts') if os.path.exists(p)]\n"
        "if seen:\n    raise SystemExit(f'visible in the sandbox: {seen}')\n"
        "socket.getaddrinfo('localhost', 80)"
    )
    r = _run(box, code)
    assert not r.ok and "gaierror" in r.error, r.error


def test_huge_output_is_stopped_and_truncated(box):
    r = _run(box, "while True:\n    print('x' * 1000)")
    assert "output limit exceeded" in r.error and r.truncated
    assert len(r.stdout) < LIMITS.max_output_chars + 100 and "output truncated" in r.stdout
    r = _run(box, "print('y' * 5000)")
    assert (
        r.ok
        and r.truncated
        and r.stdout.startswith("y" * 500)
        and "after 500 characters; 5001 bytes in all" in r.stdout
    )


def test_refuses_without_isolation_unless_opted_out(monkeypatch):
    monkeypatch.setattr(sb, "isolation_problem", lambda: "'unshare' failed (it needs root)")
    with pytest.raises(SandboxUnavailable, match="needs Linux namespaces.*isolation='none'"):
        PythonSandbox(LIMITS).run("print(1)")
    r = PythonSandbox(LIMITS, isolation="none").run("print(2)")
    assert r.ok and r.stdout == "2\n"
    env = ToolUseEnv(families=["reasoning"])
    env.reset(options={"task_id": 0})
    obs, _, term, _, info = env.step(
        '<tool_call>{"name": "python", "arguments": {"code": "print(1)"}}</tool_call>'
    )
    assert "the Python tool is disabled here" in obs and not info["action_valid"] and not term
    with pytest.raises(ValueError, match="isolation must be one of"):
        PythonSandbox(isolation="off")


def test_env_keeps_working_after_abuse():
    env = ToolUseEnv(families=["reasoning"], python_limits={"wall_time_s": 1.0})
    env.reset(options={"task_id": 0})
    for code in ("while True: pass", "import os\nwhile True: os.fork()", "x = ' ' * 10**10"):
        obs, _, term, _, info = env.step(
            f'<tool_call>{{"name": "python", "arguments": {{"code": {code!r}}}}}</tool_call>'.replace(
                "'", '"'
            )
        )
        assert obs.startswith("<tool_response>") and "Error:" in obs and not term
    obs, *_ = env.step(
        '<tool_call>{"name": "python", "arguments": {"code": "print(2**10)"}}</tool_call>'
    )
    assert obs == "<tool_response>1024</tool_response>"
    _, r, term, _, info = env.step(f"<answer>{info['ground_truth']}</answer>")
    assert term and r == 1.0
