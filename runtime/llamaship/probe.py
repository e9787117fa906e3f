"""Try an overlay in a child process first: its native libraries may crash the process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llamaship.errors import LlamashipError


class ProbeFailed(LlamashipError):
    """The overlay crashed, hung or failed to load in the probe process."""


@dataclass(frozen=True)
class ProbeResult:
    """What the probe process saw with the overlay active."""

    llama_cpp_version: str
    llama_cpp_path: str
    backends: tuple[str, ...]
    devices: tuple[str, ...]


def _self_command() -> list[str]:
    if getattr(sys, "frozen", False):  # the bundle's `backend` executable
        return [sys.executable]
    return [sys.executable, "-m", "llamaship"]


def run_probe(llama_dir: Path, runtime_lib_dir: Path, timeout: float) -> ProbeResult:
    """Import the overlay's llama_cpp and load its backends in a subprocess."""
    command = [*_self_command(), "probe", "--llama-dir", os.fspath(llama_dir),
               "--runtime-lib-dir", os.fspath(runtime_lib_dir)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        msg = f"the overlay probe did not finish within {timeout:g} s (hung while loading)"
        raise ProbeFailed(msg) from None
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        msg = f"the overlay probe crashed ({name}) while loading the overlay's llama.cpp"
        raise ProbeFailed(msg)
    last_line = (result.stdout.strip().splitlines() or [""])[-1]
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        msg = f"the overlay probe failed (exit {result.returncode}): {detail}"
        raise ProbeFailed(msg)
    try:
        seen = json.loads(last_line)
        return ProbeResult(seen["llama_cpp_version"], seen["llama_cpp_path"],
                           tuple(seen["backends"]), tuple(seen["devices"]))
    except (ValueError, KeyError, TypeError):
        msg = f"the overlay probe printed no result (last line: {last_line!r})"
        raise ProbeFailed(msg) from None
