"""The probe the overlay tests install with: test layers hold no real ggml, so instead of
`llamaship.launch.probe.run_probe` a child process imports the overlay's llama_cpp and checks it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llamaship.overlay.checkpoints import InstallObserver, ignore_step
from llamaship.overlay.install import Installer
from llamaship.paths import DataDirs
from llamaship_contract.errors import LlamashipError
from overlay_kit.releases import FAST_OPTIONS, TARGET, Keys


class FakeProbeFailed(LlamashipError):
    """The test probe's child process could not import the overlay's llama_cpp."""


def import_probe(llama_dir: Path, runtime_lib_dir: Path, timeout: float) -> None:
    """The probe for test layers (no real ggml inside): a child process imports the overlay's
    llama_cpp (which must come from `llama_dir`) and checks the runtime library folder."""
    code = (
        "import sys, llama_cpp; from pathlib import Path; "
        "assert Path(sys.argv[2]).is_dir(), 'runtime lib dir missing'; "
        "print(llama_cpp.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(llama_dir), str(runtime_lib_dir)],
        env={**os.environ, "PYTHONPATH": str(llama_dir)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise FakeProbeFailed(f"probe child exited {result.returncode}: {result.stderr.strip()}")
    if not Path(result.stdout.strip()).is_relative_to(llama_dir):
        raise FakeProbeFailed(f"llama_cpp came from {result.stdout.strip()}, not the overlay")


def install_release(
    dirs: DataDirs, location: str, keys: Keys, observer: InstallObserver = ignore_step
) -> None:
    """Install the release at `location` with the fast test options and the import probe."""
    Installer(
        dirs, [keys.public], probe=import_probe, options=FAST_OPTIONS, observer=observer
    ).install(location, TARGET)
