"""Run a step of `scripts/bench_runtime.py`, the runtime's side of `nox -s bench`.

The build never imports the runtime: the steps it times run in the environment under test
(an interpreter with llamaship installed), and this side reads what they print.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.project import Project

SCRIPT = Path("scripts") / "bench_runtime.py"


def probe_command(python: Path, step: str, *args: str, root: Path | None = None) -> list[str]:
    """The command line of `step` with `args`, run by `python` from the checkout `root`."""
    script = (root or Project.here().root) / SCRIPT
    return [str(python), str(script), step, *args]


def run_probe(
    command: list[str],
    failure: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `command`; BuildError starting with `failure` (exit status and stderr) if it fails."""
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        msg = f"{failure} (exit {result.returncode}): {result.stderr[-500:]}"
        raise BuildError(msg)
    return result


def last_line(result: subprocess.CompletedProcess[str], failure: str) -> str:
    """The last line `result` printed; BuildError starting with `failure` if none."""
    lines = result.stdout.strip().splitlines()
    if not lines:
        msg = f"{failure}: it printed nothing: {result.stderr[-500:]}"
        raise BuildError(msg)
    return lines[-1]
