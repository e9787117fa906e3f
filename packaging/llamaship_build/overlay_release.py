"""`nox -s overlay` and `nox -s release`: the CUDA backend module, signed layers, the index.

Sources of the CUDA backend module (`libggml-cuda.so`) of the pinned llama-cpp-python, which
the bundle's own ggml loads, so it must come from the same sdist and portable flags:
- `build`: compile it here with nvcc (`cuda_module`; `--archs`, about 25 minutes per
  architecture on 2 cores);
- `wheel PATH`: take it out of a llama-cpp-python CUDA wheel built that way (offline builds,
  tests). An official CUDA wheel is not: its module is another compile.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import Pin
from llamaship_build.overlay_build import build_overlay, download_runtime_wheels
from llamaship_build.overlay_layers import module_from_wheel
from llamaship_build.project import Project, cache_dir
from llamaship_build.release_index import DEFAULT_LIFETIME, write_release_index
from llamaship_contract.overlay import LayerManifest, parse_manifest
from llamaship_contract.signing import load_signing_key

_log = logging.getLogger(__name__)
SOURCES = ("build", "wheel")
# The oldest driver each CUDA major version runs on (NVIDIA's CUDA compatibility table).
MIN_DRIVER: dict[str, dict[str, str]] = {
    "12": {"linux": "525.60.13", "windows": "527.41"},
    "13": {"linux": "580.65.06", "windows": "580.88"},
}
# The chosen fat-binary compression modes need a newer CUDA 12 driver to decompress
# (NVIDIA's RAPIDS build rules: `balance` and `size` need the CUDA 12.4 driver); every
# CUDA 13 driver reads them all.
COMPRESSED_MIN_DRIVER: dict[str, dict[str, dict[str, str]]] = {
    "12": {mode: {"linux": "550.54.14", "windows": "551.61"} for mode in ("balance", "size")},
}
DEFAULT_MIN_VRAM_MB = 1024


def min_driver(cuda_version: str, compress_mode: str) -> dict[str, str]:
    """The oldest driver per OS that runs a module of `cuda_version` built with
    `compress_mode`: the CUDA version's floor, raised where the compression needs it."""
    major = cuda_version.split(".")[0]
    if major not in MIN_DRIVER:
        msg = f"no driver floor is known for CUDA {major}: add it to MIN_DRIVER"
        raise BuildError(msg)
    return COMPRESSED_MIN_DRIVER.get(major, {}).get(compress_mode, MIN_DRIVER[major])


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
    compress_mode: str = "size"  # ggml's GGML_CUDA_COMPRESSION_MODE for `build`
    per_arch: bool = True  # `build`: one overlay per real architecture (see `families`)


@dataclass(frozen=True)
class ArchFamily:
    """The architectures one overlay's module is compiled for, and its version's label."""

    label: str  # "sm86", or "" for a single overlay
    archs: tuple[str, ...]
    ptx_archs: tuple[str, ...]


def _arch_number(arch: str) -> tuple[int, str]:
    digits = "".join(itertools.takewhile(str.isdigit, arch))
    return (int(digits or 0), arch)


def families(archs: Sequence[str], ptx_archs: Sequence[str], per_arch: bool) -> list[ArchFamily]:
    """The overlays of a release: one per real architecture, the PTX going with the newest
    (a GPU downloads only its own: about 20 MB instead of 120 MB for every card), or one
    holding them all."""
    if not per_arch or len(archs) < 2:
        return [ArchFamily("", tuple(archs), tuple(ptx_archs))]
    newest = max(archs, key=_arch_number)
    return [
        ArchFamily(f"sm{arch}", (arch,), tuple(ptx_archs) if arch == newest else ())
        for arch in sorted(archs, key=_arch_number)
    ]


def cuda_module(
    project: Project, options: OverlayOptions, family: ArchFamily, scratch: Path
) -> Path:
    """The CUDA backend module from the chosen source (a wheel's copy goes into `scratch`)."""
    if options.source == "wheel":
        if options.wheel is None or not options.wheel.is_file():
            msg = f"--source wheel needs an existing wheel file, got {options.wheel}"
            raise BuildError(msg)
        return module_from_wheel(options.wheel, scratch)
    if options.source != "build":
        msg = f"unknown overlay source {options.source!r}: use {' or '.join(SOURCES)}"
        raise BuildError(msg)
    from llamaship_build.cuda_module import ensure_cuda_module

    built = ensure_cuda_module(
        project, family.archs, family.ptx_archs, compress_mode=options.compress_mode
    )
    _log.info("CUDA module %s (%s)", built.path, built.record)
    return built.path


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
    release_version = f"{llama_version}-cu{cuda_version}-{options.serial}"
    per_arch = options.per_arch and options.source == "build"  # a wheel holds one module
    written: list[Path] = []
    shared_runtime: LayerManifest | None = None
    for family in families(options.archs, options.ptx_archs, per_arch):
        with tempfile.TemporaryDirectory() as scratch:
            module = cuda_module(project, options, family, Path(scratch))
            paths = build_overlay(
                module,
                options.out_dir,
                llama_cpp_version=llama_version,
                cuda_version=cuda_version,
                # A wheel's module: ggml compresses with `size` unless its build chose otherwise.
                min_driver=min_driver(cuda_version, options.compress_mode),
                min_vram_mb=DEFAULT_MIN_VRAM_MB,
                serial=options.serial,
                overlay_version=(
                    f"{llama_version}-cu{cuda_version}-{family.label}-{options.serial}"
                    if family.label
                    else release_version
                ),
                signing_key_b64=key,
                runtime_wheels=runtime_wheels,
                compression_level=options.level,
                release_version=release_version,
                shared_runtime=shared_runtime,
            )
        written += paths
        shared_runtime = shared_runtime or _runtime_manifest(paths)
    return written


def _runtime_manifest(paths: Sequence[Path]) -> LayerManifest:
    """The cuda-runtime manifest among the files an overlay build wrote."""
    for path in paths:
        if path.name.startswith("cuda-runtime-") and path.suffix == ".json":
            return parse_manifest(path.read_bytes(), origin=str(path))
    msg = "the overlay build wrote no cuda-runtime manifest"
    raise BuildError(msg)


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
