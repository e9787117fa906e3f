"""Start a backend (bundle or venv) on a free loopback port and wait until it is healthy."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError


@dataclass(frozen=True)
class RunningBackend:
    """A launched backend: its process, base URL, launch-to-healthy seconds, output file, and
    the file it writes its port to (again after a restart)."""

    process: subprocess.Popen[bytes]
    url: str
    seconds_to_healthy: float
    log: Path
    port_file: Path


def _wait_healthy(
    process: subprocess.Popen[bytes], port_file: Path, log: Path, deadline: float
) -> str:
    import httpx

    url = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            msg = (
                f"the backend exited with code {process.returncode} before it was healthy; "
                f"its last output:\n{tail}"
            )
            raise BuildError(msg)
        if not url and port_file.is_file() and port_file.read_text().strip():
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
        if url:
            try:
                if httpx.get(f"{url}/api/health", timeout=1.0).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.01)
    msg = f"the backend did not become healthy in time (its output: {log})"
    raise BuildError(msg)


@contextmanager
def launched(
    command: Sequence[str], env: Mapping[str, str], timeout: float = 120.0, inherit_env: bool = True
) -> Iterator[RunningBackend]:
    """Run `command serve --port 0`, yield once /api/health answers, then stop it (SIGTERM).

    `env` is added to this process's environment (or replaces it: `inherit_env=False`); the
    output goes to a log file.
    """
    with tempfile.TemporaryDirectory(prefix="llamaship-launch-") as scratch:
        port_file, log = Path(scratch) / "port", Path(scratch) / "output.log"
        started = time.monotonic()
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [*command, "serve", "--host", "127.0.0.1", "--port", "0"],
                env={
                    **(os.environ if inherit_env else {}),
                    **env,
                    "LLAMASHIP_PORT_FILE": str(port_file),
                },
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            url = _wait_healthy(process, port_file, log, started + timeout)
            yield RunningBackend(process, url, time.monotonic() - started, log, port_file)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
