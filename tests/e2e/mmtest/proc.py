"""Shared handling of the processes tests start (daemons, QEMUs)."""

from __future__ import annotations

import os
import signal
import subprocess


def quit_and_reap(client, proc: subprocess.Popen | None, grace: float = 10) -> int | None:
    """Asks politely over `client` (QMP or control socket: execute("quit")),
    waits `grace` seconds, then kills the whole process group. Returns the
    exit code."""
    if client is not None:
        try:
            client.execute("quit")
        except Exception:
            pass  # already gone, or not answering: the kill below settles it
        client.close()
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
    return proc.returncode


def report(problems: list[str], logs: str = "") -> int:
    """Ends a test script: prints FAIL with the problems (and logs) or PASS."""
    if problems:
        print("FAIL:\n  " + "\n  ".join(problems))
        if logs:
            print(logs)
        return 1
    print("PASS")
    return 0
