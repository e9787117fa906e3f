"""Restarting the backend after `POST /api/admin/restart` (e.g. to activate a new GPU overlay).

The route answers 202 and asks the server to stop; once uvicorn has shut down cleanly,
`llamaship_backend.server.serve` restarts according to `LLAMASHIP_RESTART`:

- `exec` (default): the process re-executes itself with the same command line (same pid on
  POSIX), so the bootstrap runs again and may pick another llama.cpp build.
- `exit`: the process exits with status 75 (`RESTART_EXIT_CODE`, EX_TEMPFAIL in sysexits.h),
  which tells a supervising process (the Electron shell) to launch it again.

See docs/restart.md.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable

from llamaship.launch.launch_env import before_launch

logger = logging.getLogger(__name__)

RESTART_EXIT_CODE = 75


class RestartRequest:
    """The link from the restart route to the server that can stop itself."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._stop_server: Callable[[], None] | None = None

    def bind(self, stop_server: Callable[[], None]) -> None:
        """Called by the server that runs the app: `stop_server` starts a graceful shutdown."""
        self._stop_server = stop_server

    @property
    def bound(self) -> bool:
        return self._stop_server is not None

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def request(self) -> None:
        """Mark the restart and stop the server (the route calls this after its 202 reply)."""
        self._requested.set()
        if self._stop_server is not None:
            self._stop_server()


def restart_command() -> list[str]:
    """The command line that started this process, to run it again.

    Frozen (PyInstaller): `sys.executable` is the `backend` executable itself and
    `sys.argv[0]` names it too, so only `sys.argv[1:]` follows. Otherwise (`python -m
    llamaship`, a console script, `python -c`): the interpreter with its original arguments.
    """
    if getattr(sys, "frozen", False):
        return [sys.executable, *sys.argv[1:]]
    return [sys.executable, *sys.orig_argv[1:]]


def restart_environment() -> dict[str, str]:
    """The environment for the new process: this one's as it was before the launch named an
    overlay's module in it (the new launch decides again).

    A frozen build asks the PyInstaller bootloader to start as a new application instance,
    not as a worker subprocess of this one (PyInstaller >= 6.9).
    """
    environment = before_launch(os.environ)
    if getattr(sys, "frozen", False):
        environment["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    return environment


def _spawn(command: list[str], environment: dict[str, str]) -> object:
    # Our own command line. Its own process group: a Ctrl+C meant for the old console
    # session does not reach it; the file handles of this process are not inherited.
    return subprocess.Popen(
        command,
        env=environment,
        close_fds=True,
        creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
    )


def _exec(command: list[str], environment: dict[str, str]) -> object:
    os.execve(command[0], command, environment)  # replaces this process: never returns


def exec_restart(
    system: str = sys.platform,
    spawn: Callable[[list[str], dict[str, str]], object] = _spawn,
    execute: Callable[[list[str], dict[str, str]], object] = _exec,
) -> int:
    """Replace this process with a fresh run of the same command (returns only on Windows).

    Windows has no real exec (its `os.execv` spawns a child with a new pid and mangles
    arguments with spaces): there a new process is spawned and this one exits with 0, after
    the server has closed its socket, so the new one can bind the same port. `system` (a
    `sys.platform` value) and the two process calls are parameters so tests run both branches.
    """
    command = restart_command()
    environment = restart_environment()
    logger.info("restarting: %s", subprocess.list2cmdline(command))
    sys.stdout.flush()
    sys.stderr.flush()
    if system == "win32":
        spawn(command, environment)
        return 0
    execute(command, environment)
    return 0
