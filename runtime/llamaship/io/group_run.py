"""Run a helper command in its own process group; kill the whole group if it outlives a timeout.

Shared by the `nvidia-smi` fallback and the `llama-fit-params` run: a hung driver call or tool
must never hold the caller beyond its timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def self_command() -> list[str]:
    """How this program starts itself as a child (the probe, the Vulkan query, a measurement):
    the bundle's `backend` executable when frozen, else `python -m llamaship`."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "llamaship"]


def run_in_group(
    command: Sequence[str],
    timeout: float,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run `command` with no stdin; its exit status, stdout and stderr.

    Raises `OSError` when it cannot be started, and `subprocess.TimeoutExpired` after killing
    its process group when it outlives `timeout`. `on_start` receives the process once it
    runs, so another thread can end it early with `kill_group`.
    """
    creationflags = 0
    if sys.platform == "win32":
        creationflags = subprocess.CREATE_NEW_PROCESS_GROUP
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=sys.platform != "win32",
        cwd=cwd,
        env=env,
        creationflags=creationflags,
    )
    if on_start is not None:
        on_start(process)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise
    return process.returncode, stdout, stderr


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the process group of a process `run_in_group` started (from any thread)."""
    if sys.platform != "win32":  # on Windows, Popen.kill() ends the process (no children here)
        import signal

        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group already exited
    process.kill()


def _kill(process: subprocess.Popen[bytes]) -> None:
    kill_group(process)
    # Wait for the process only: a descendant that escaped the group may hold a pipe open.
    process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
