"""The probe the overlay tests install with: test layers hold no real ggml module, so instead of
`llamaship.launch.probe.run_probe` a child process checks, with the environment activation
sets (`cuda_environment`), that the module and the runtime folder are where it names them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llamaship.launch.activate import cuda_environment
from llamaship.overlay.checkpoints import InstallObserver, ignore_step
from llamaship.overlay.install import Installer
from llamaship.paths import DataDirs
from llamaship_contract.errors import LlamashipError
from overlay_kit.releases import FAST_OPTIONS, TARGET, Keys


class FakeProbeFailed(LlamashipError):
    """The test probe's child process did not find the overlay's module or runtime folder."""


def layer_probe(module: Path, runtime_lib_dir: Path, timeout: float) -> None:
    """The probe for test layers (no real ggml module inside): a child process reads the
    module GGML_BACKEND_PATH names and checks the runtime folder is first on its search path."""
    code = (
        "import os; from pathlib import Path; "
        "module = Path(os.environ['GGML_BACKEND_PATH']); "
        "runtime = Path(os.environ['LD_LIBRARY_PATH'].split(os.pathsep)[0]); "
        "assert runtime.is_dir(), 'runtime lib dir missing'; "
        "module.read_bytes(); print(module)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **cuda_environment(module, runtime_lib_dir, os.environ)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise FakeProbeFailed(f"probe child exited {result.returncode}: {result.stderr.strip()}")
    if Path(result.stdout.strip()) != module:
        raise FakeProbeFailed(f"the child loaded {result.stdout.strip()}, not {module}")


def install_release(
    dirs: DataDirs, location: str, keys: Keys, observer: InstallObserver = ignore_step
) -> None:
    """Install the release at `location` with the fast test options and the module probe."""
    Installer(
        dirs, [keys.public], probe=layer_probe, options=FAST_OPTIONS, observer=observer
    ).install(location, TARGET)
