"""`nox -s pin_overlay_source -- --index-url URL`: pin the official CUDA wheel of llama-cpp-python.

Writes `requirements/overlay-sources.json` ({"index_url", "sha256", "wheel", "version"}): the
`wheel-index` overlay source downloads exactly that wheel, hash-checked. Run it on a machine
that reaches the index, review the diff and commit it; without the file the release workflow
builds the CUDA wheel from source (`--source auto`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import Pin
from llamaship_contract.hashing import sha256_of

SOURCES_FILE = "overlay-sources.json"  # read by overlay_release._index_pin
# The overlay is built for the Linux runtime: CPython 3.11 on x86-64.
WHEEL_PLATFORM = (
    "--platform",
    "linux_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)


def pin_document(index_url: str, wheel: Path, version: str) -> str:
    """The pin file's text for `wheel` downloaded from `index_url`."""
    document = {
        "index_url": index_url,
        "sha256": sha256_of(wheel),
        "version": version,
        "wheel": wheel.name,
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def pin_overlay_source(requirements: Path, index_url: str) -> Path:
    """Download the CUDA wheel of the locked llama-cpp-python version; write its pin."""
    if not index_url.startswith("https://"):
        msg = f"--index-url must be an https URL, not {index_url!r}"
        raise BuildError(msg)
    version = Pin.from_lock(requirements / "gpu.txt").version
    with tempfile.TemporaryDirectory(prefix="llamaship-pin-") as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            *WHEEL_PLATFORM,
            "--index-url",
            index_url,
            "-d",
            scratch,
            f"llama-cpp-python=={version}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(Path(scratch).glob("llama_cpp_python-*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            msg = (
                f"cannot download llama-cpp-python {version} (cp311, linux_x86_64) from "
                f"{index_url}: {result.stderr.strip()[-1000:] or 'no wheel'}"
            )
            raise BuildError(msg)
        target = requirements / SOURCES_FILE
        target.write_text(pin_document(index_url, wheels[0], version), encoding="utf-8")
    return target


def auto_source(requirements: Path) -> str:
    """`wheel-index` when the official wheel is pinned, else `build` (compile with nvcc)."""
    return "wheel-index" if (requirements / SOURCES_FILE).is_file() else "build"
