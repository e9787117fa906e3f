"""docs/schemas/openapi.json: the HTTP API's OpenAPI document, as `llamaship openapi` prints it.

The build side never imports the backend (tests/test_contract.py): it runs the backend's
command in a subprocess of this Python, which has the project installed (`nox -s schemas`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

from llamaship_build.errors import BuildError

FILE_NAME: Final = "openapi.json"
COMMAND: Final = ("-m", "llamaship_backend", "openapi")
TIMEOUT_SECONDS: Final = 120


def openapi_text(python: str = sys.executable) -> str:
    """The document the backend prints (`python -m llamaship_backend openapi`)."""
    command = [python, *COMMAND]
    shown = " ".join(command)
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        msg = f"`{shown}` did not run ({error}); run `nox -s schemas`"
        raise BuildError(msg) from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        msg = (
            f"`{shown}` failed (exit status {result.returncode}: {lines[-1]}); install the "
            "project in this Python (`pip install -e .`) or run `nox -s schemas`"
        )
        raise BuildError(msg)
    return result.stdout


def is_stale(directory: Path, python: str = sys.executable) -> bool:
    """`directory`'s openapi.json is missing or differs from what the backend prints."""
    path = directory / FILE_NAME
    return not path.is_file() or path.read_text(encoding="utf-8") != openapi_text(python)


def export(directory: Path, python: str = sys.executable) -> Path:
    """Write the document into `directory`; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    path.write_text(openapi_text(python), encoding="utf-8")
    return path
