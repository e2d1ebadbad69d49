"""Tie a server process's life to the run that started it.

    python -m creditgym.agents.backends.lifeline PARENT_PID -- CMD [ARGS...]

runs ``CMD`` as a child in this process's group and waits for it. Once a second it checks that
``PARENT_PID`` is still its parent. When the parent is gone (the trainer was SIGKILLed, or died
without closing its backend), it sends SIGTERM to the whole group, then SIGKILL after a grace
period, so the server and everything it started (vLLM's engine core and workers) end with the run.
``PR_SET_PDEATHSIG`` cannot do this for servers started from worker threads: Linux sends that
signal when the starting *thread* exits, not the process.

Start it with ``start_new_session=True`` so that it leads its own group; ``os.killpg`` on its pid
then stops the server as before. Its exit code is the server's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

__all__ = ["command", "main"]

#: Seconds between SIGTERM and SIGKILL when the parent is gone.
GRACE_S = 5.0


def command(cmd: list[str], parent_pid: int | None = None) -> list[str]:
    """``cmd`` wrapped so that it ends when ``parent_pid`` (default: this process) exits."""
    pid = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-m", "creditgym.agents.backends.lifeline", str(pid), "--", *cmd]


def _stop_group(child: subprocess.Popen) -> None:
    """SIGTERM the group, give the server ``GRACE_S`` to exit, then SIGKILL what is left (this
    process included)."""
    os.killpg(0, signal.SIGTERM)  # this process ignores it (see main)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=GRACE_S)
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: lifeline PARENT_PID -- CMD [ARGS...]", file=sys.stderr)
        return 2
    try:
        parent = int(argv[0])
    except ValueError:
        print(f"lifeline: PARENT_PID must be an integer, got {argv[0]!r}", file=sys.stderr)
        return 2
    if os.getppid() != parent:  # the parent died before we started
        return 1
    # SIGTERM to the group (from the parent's close, or from _stop_group) must not end this
    # process before the SIGKILL that follows it has been sent.
    signal.signal(signal.SIGTERM, lambda *_: None)
    child = subprocess.Popen(argv[2:])
    while True:
        try:
            return child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != parent:
            _stop_group(child)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
