"""The lifeline wrapper stops a server's process group when the process that started it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from creditgym.agents.backends import lifeline

# A parent that starts ``sleep`` under the lifeline (in its own session, as the vLLM backend
# does), prints the lifeline's pid, and then waits to be killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from creditgym.agents.backends import lifeline
    p = subprocess.Popen(lifeline.command(["sleep", "300"]), start_new_session=True)
    print(p.pid, flush=True)
    time.sleep(300)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and _alive(int(entry)):
                    pids.append(int(entry))
            except (ProcessLookupError, FileNotFoundError):
                pass
    return pids


def test_server_group_ends_when_its_parent_is_sigkilled() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        wrapper = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while len(_group(wrapper)) < 2:  # the lifeline and its sleep
            assert time.monotonic() < deadline, "the wrapped command did not start"
            time.sleep(0.1)
        members = _group(wrapper)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20  # 1 s poll + SIGTERM; sleep obeys it at once
        while any(_alive(p) for p in members):
            assert time.monotonic() < deadline, f"left behind: {_group(wrapper)}"
            time.sleep(0.1)
    finally:
        parent.kill()
        parent.wait()


def test_exit_code_is_the_commands_and_bad_usage_is_refused() -> None:
    ok = subprocess.run(lifeline.command([sys.executable, "-c", "raise SystemExit(7)"]))
    assert ok.returncode == 7
    bad = subprocess.run(
        [sys.executable, "-m", "creditgym.agents.backends.lifeline", "x", "--", "true"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "PARENT_PID must be an integer" in bad.stderr
    assert lifeline.main(["1"]) == 2
