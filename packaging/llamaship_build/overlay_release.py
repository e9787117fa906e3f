"""`nox -s overlay` and `nox -s release`: pick a CUDA build source, build signed layers, index.

Sources of the CUDA build of the pinned llama-cpp-python:
- `wheel-index`: the official CUDA wheel index (URL and wheel sha256 pinned in
  requirements/overlay-sources.json; release CI reaches it);
- `build`: compile the sdist here with nvcc (`--archs`, 40-60 minutes per architecture);
- `wheel PATH`: any llama-cpp-python wheel file (offline builds, tests).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.fit_tool import ensure_fit_tool
from llamaship_build.llama_wheel import Pin
from llamaship_build.overlay_build import (
    build_overlay,
    download_runtime_wheels,
    hash_checked_file,
)
from llamaship_build.project import Project, cache_dir
from llamaship_build.release_index import DEFAULT_LIFETIME, write_release_index
from llamaship_contract.overlay import parse_manifest
from llamaship_contract.signing import load_signing_key

_log = logging.getLogger(__name__)
SOURCES_FILE = "overlay-sources.json"
# The oldest driver each CUDA major version runs on (NVIDIA's CUDA compatibility table).
MIN_DRIVER: dict[str, dict[str, str]] = {
    "12": {"linux": "525.60.13", "windows": "527.41"},
    "13": {"linux": "580.65.06", "windows": "580.88"},
}
DEFAULT_MIN_VRAM_MB = 1024
_REACH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class OverlayOptions:
    """How to build the overlay: source, architectures, serial, compression, output."""

    source: str
    wheel: Path | None
    archs: tuple[str, ...]
    ptx_archs: tuple[str, ...]
    serial: int
    level: int
    key_file: Path | None
    out_dir: Path
    unsigned: bool = False  # no manifest signatures: `sign-release` adds them (release CI)


def _index_pin(project: Project) -> Mapping[str, str]:
    path = project.requirements / SOURCES_FILE
    try:
        data = json.loads(path.read_text())
        return {"index_url": str(data["index_url"]), "sha256": str(data["sha256"])}
    except (OSError, ValueError, KeyError, TypeError) as error:
        msg = (
            f'{path} must pin the CUDA wheel index: {{"index_url": ..., "sha256": '
            f"<the wheel's sha256>}} ({error})"
        )
        raise BuildError(msg) from None


def wheel_index_reachable(project: Project) -> bool:
    try:
        url = _index_pin(project)["index_url"]
        with urllib.request.urlopen(url, timeout=_REACH_TIMEOUT_S):
            return True
    except (BuildError, OSError):
        return False


def _from_wheel_index(project: Project, dest: Path) -> Path:
    pin = Pin.from_lock(project.requirements / "gpu.txt")
    source = _index_pin(project)
    with tempfile.TemporaryDirectory() as scratch:
        requirement = Path(scratch) / "cuda-wheel.txt"
        requirement.write_text(
            f"llama-cpp-python=={pin.version} --hash=sha256:{source['sha256']}\n"
        )
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--index-url",
            source["index_url"],
            "-r",
            str(requirement),
            "-d",
            str(dest),
        ]
        if subprocess.run(command, check=False).returncode != 0:
            msg = (
                f"could not download llama-cpp-python {pin.version} from "
                f"{source['index_url']} with the pinned sha256; check the pin in "
                f"requirements/{SOURCES_FILE}"
            )
            raise BuildError(msg)
    return hash_checked_file(dest, "llama_cpp_python-*.whl", [source["sha256"]])


def cuda_wheel(project: Project, options: OverlayOptions, scratch: Path) -> Path:
    """The CUDA build of llama-cpp-python from the chosen source."""
    if options.source == "wheel":
        if options.wheel is None or not options.wheel.is_file():
            msg = f"--source wheel needs an existing wheel file, got {options.wheel}"
            raise BuildError(msg)
        return options.wheel
    if options.source == "build":
        from llamaship_build.cuda_toolchain import build_cuda_wheel

        return build_cuda_wheel(
            project.requirements / "gpu.txt",
            options.archs,
            cache_dir() / "wheelhouse",
            ptx_archs=options.ptx_archs,
        )
    return _from_wheel_index(project, scratch)


def _cuda_version(runtime_wheels: Sequence[Path]) -> str:
    for wheel in runtime_wheels:
        if wheel.name.startswith("nvidia_cuda_runtime"):
            major, minor = wheel.name.split("-")[1].split(".")[:2]
            return f"{major}.{minor}"
    msg = "the CUDA runtime wheels hold no nvidia-cuda-runtime: check requirements/gpu.in"
    raise BuildError(msg)


def build(project: Project, options: OverlayOptions) -> list[Path]:
    """Build and sign both layers into `options.out_dir`."""
    key = None if options.unsigned else load_signing_key(options.key_file, os.environ)
    runtime_wheels = download_runtime_wheels(
        project.requirements / "gpu.txt", cache_dir() / "nvidia-wheels"
    )
    cuda_version = _cuda_version(runtime_wheels)
    llama_version = Pin.from_lock(project.requirements / "gpu.txt").version
    # llama.cpp's memory fit ships in the llama-cuda layer: compiled now if not built yet, so
    # the layer never depends on what this machine happened to have built.
    ensure_fit_tool(Pin.from_lock(project.requirements / "cpu.txt"), cache_dir() / "fit-tool")
    with tempfile.TemporaryDirectory() as scratch:
        wheel = cuda_wheel(project, options, Path(scratch))
        return build_overlay(
            wheel,
            options.out_dir,
            cuda_version=cuda_version,
            min_driver=MIN_DRIVER[cuda_version.split(".")[0]],
            min_vram_mb=DEFAULT_MIN_VRAM_MB,
            serial=options.serial,
            overlay_version=f"{llama_version}-cu{cuda_version}-{options.serial}",
            signing_key_b64=key,
            runtime_wheels=runtime_wheels,
            compression_level=options.level,
        )


def default_serial() -> int:
    """Serials only grow: seconds since the epoch (SOURCE_DATE_EPOCH for reproducible runs)."""
    return int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))


def release(
    overlay_dir: Path,
    out_dir: Path,
    serial: int,
    base_url: str,
    signing_key_b64: str,
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> list[Path]:
    """Copy the layers into `out_dir` and write the signed release index over them
    (`overlays.json` and `releases.json`, expiring `lifetime` from now)."""
    manifests: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(overlay_dir.glob("*.json")):
        manifest = parse_manifest(path.read_bytes(), origin=str(path))
        manifests[manifest.overlay_version].append(path)
    if not manifests:
        msg = f"no overlay layers in {overlay_dir}: run `nox -s overlay` first"
        raise BuildError(msg)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(overlay_dir.iterdir()):
        if path.is_file():
            shutil.copy2(path, out_dir / path.name)
    entries = [[out_dir / path.name for path in paths] for _, paths in sorted(manifests.items())]
    return write_release_index(
        out_dir, entries, serial, signing_key_b64, base_url, lifetime=lifetime
    )
