"""The CUDA backend module `libggml-cuda.so`, compiled in the Debian 11 root and cached.

Same sdist and flags as the bundle's portable CPU wheel plus `GGML_CUDA=ON`, so the bundle's
own `libggml` loads the module with `ggml_backend_load` (as for Vulkan); only the `ggml-cuda`
target is built. nvcc comes from NVIDIA's pinned pip wheels (`cuda_toolkit`), cuBLAS from the
`nvidia-cublas` wheel the overlay ships and the driver stub from `cuda.h` (`cuda_toolchain`);
the three folders are mounted into the root at their own paths. The module then needs only
the glibc and libstdc++ of Debian 11, whatever the host has.

`compress_mode` is ggml's `GGML_CUDA_COMPRESSION_MODE`, which it passes to nvcc as
`-compress-mode` (CUDA >= 12.8): `size` (ggml's default) trades a slower first load for the
smallest module; the driver decompresses it (CUDA 13: any driver CUDA 13 runs on; CUDA 12:
550.54.14 or newer, by NVIDIA's RAPIDS build rules). A `-compress-mode` in CUDAFLAGS would
come first on nvcc's command line and lose to ggml's.

Cached in `<cache>/cuda/<key>/` (`module_slot`) keyed by the sdist hashes, the flags, the
architectures, the compression, the toolkit and cuBLAS, beside `build.json` (what it was built
with, seconds).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llamaship_build.cuda_toolchain import (
    CudaToolchain,
    check_archs,
    cuda_architectures,
    plan_toolchain,
    prepare_toolchain,
)
from llamaship_build.cuda_toolkit import ensure_toolkit
from llamaship_build.debian_root import COMPILERS, DebianRoot
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import (
    PORTABLE,
    Pin,
    build_env,
    download_sdist,
    prefix_map_env,
    unpack_sdist,
)
from llamaship_build.module_slot import ModuleSlots
from llamaship_build.project import Project, cache_dir
from llamaship_build.settings import BuildSettings
from llamaship_build.toolchain import Toolchain, configured_name, default_toolchain

_log = logging.getLogger(__name__)

MODULE = "libggml-cuda.so"
# ggml-cuda's choices; nvcc's own default is `speed`.
COMPRESS_MODES = ("size", "balance", "speed", "none")
# Bump the recipe when how the module is compiled changes (not its inputs): older modules are
# not reused.
SLOTS = ModuleSlots("cuda", MODULE, recipe=2)


@dataclass(frozen=True)
class BuiltCudaModule:
    """The compiled backend module and what it was built with (`build.json`)."""

    path: Path
    record: Mapping[str, object]


def cuda_flags(architectures: str, compress_mode: str, toolchain: CudaToolchain) -> tuple[str, ...]:
    """The CMake flags: the bundle's portable ones, CUDA for `architectures` compressed with
    `compress_mode`, the toolchain."""
    return (
        *PORTABLE.cmake_args,
        "-DGGML_CUDA=ON",
        f"-DCMAKE_CUDA_ARCHITECTURES={architectures}",
        f"-DGGML_CUDA_COMPRESSION_MODE={compress_mode}",
        *toolchain.cmake_args(),
    )


def module_key(pin: Pin, toolchain_name: str, fields: Mapping[str, object]) -> str:
    """Cache key: recipe, sdist hashes, the build toolchain and the compile's own fields."""
    return SLOTS.key(pin, toolchain_name, fields)


def cached_module(cache: Path, key: str) -> BuiltCudaModule | None:
    """The module already compiled under `key`, if any."""
    found = SLOTS.cached(cache, key)
    return None if found is None else BuiltCudaModule(*found)


def ensure_cuda_module(
    project: Project,
    archs: Sequence[str],
    ptx_archs: Sequence[str] = (),
    compress_mode: str = "size",
) -> BuiltCudaModule:
    """The CUDA backend module of the pinned llama-cpp-python for `archs` (SASS) and
    `ptx_archs` (PTX), compiling it on a cache miss: about 25 minutes per architecture on
    2 cores."""
    if compress_mode not in COMPRESS_MODES:
        msg = f"unknown compress mode {compress_mode!r}: use one of {', '.join(COMPRESS_MODES)}"
        raise BuildError(msg)
    cache = cache_dir()
    toolkit = ensure_toolkit(project.requirements, cache)
    check_archs([*archs, *ptx_archs], toolkit.archs, toolkit.release)
    gpu_lock = project.requirements / "gpu.txt"
    cuda = plan_toolchain(toolkit, gpu_lock, cache)
    architectures = cuda_architectures(archs, ptx_archs)
    flags = cuda_flags(architectures, compress_mode, cuda)
    pin = Pin.from_lock(gpu_lock)
    # Keyed by the toolchain's name: a cached module needs no build root, nor cuBLAS unpacked.
    key = module_key(
        pin,
        configured_name(BuildSettings.resolve(os.environ)),
        {
            "cmake_args": flags,
            "nvcc": toolkit.build,
            # Every wheel of the toolkit (crt, nvvm, cccl too), by the hash of their bytes.
            "toolkit": toolkit.root.name,
            "cublas": cuda.cublas_version,
        },
    )
    existing = cached_module(cache, key)
    if existing is not None:
        return existing
    prepare_toolchain(cuda, gpu_lock, cache / "nvidia-wheels")
    # The folders nvcc, cuBLAS and the driver stub live in, seen at the same path in the root.
    toolchain = default_toolchain((toolkit.root, cuda.cublas_root, cuda.driver_stub.parent))
    _log.info(
        "compiling the CUDA backend of llama-cpp-python %s for %s with nvcc %s "
        "(--compress-mode=%s, %s toolchain): about 25 minutes per architecture on 2 cores",
        pin.version,
        architectures,
        toolkit.build,
        compress_mode,
        toolchain.name,
    )
    with toolchain.scratch() as scratch:
        started = time.monotonic()
        module = _compile(pin, flags, scratch, toolchain)
        seconds = round(time.monotonic() - started)
        record = {
            "key": key,
            "recipe": SLOTS.recipe,
            "llama_cpp_version": pin.version,
            "sdist_sha256": list(pin.sha256),
            "cuda_architectures": architectures,
            "compress_mode": compress_mode,
            "nvcc": toolkit.build,
            "cublas": cuda.cublas_version,
            "toolchain": toolchain.name,
            "module_bytes": module.stat().st_size,
            "seconds": seconds,
        }
        stored = SLOTS.store(cache, key, module, record)
    _log.info("CUDA backend compiled in %d s: %d bytes", seconds, record["module_bytes"])
    return BuiltCudaModule(stored, record)


def _compile(pin: Pin, flags: Sequence[str], scratch: Path, toolchain: Toolchain) -> Path:
    python = build_env(pin, scratch, toolchain)
    source = unpack_sdist(download_sdist(pin, scratch, toolchain, python), scratch / "src")
    build = scratch / "build"
    cmake = str(PurePosixPath(python).parent / "cmake")
    # nvcc runs the root's own C++ compiler for the host code (the root has no gcc).
    host = (
        [f"-DCMAKE_CUDA_HOST_COMPILER={COMPILERS['CXX']}"]
        if isinstance(toolchain, DebianRoot)
        else []
    )
    jobs = str(os.cpu_count() or 1)
    env = prefix_map_env(scratch, toolchain)
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = jobs
    toolchain.run(
        [
            cmake,
            "-S",
            toolchain.inside(source),
            "-B",
            toolchain.inside(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
            *flags,
            *host,
        ],
        what="configuring the CUDA backend",
        env=env,
    )
    toolchain.run(
        [cmake, "--build", toolchain.inside(build), "--target", "ggml-cuda", f"-j{jobs}"],
        what="compiling the CUDA backend (ggml-cuda)",
        env=env,
    )
    found = sorted(build.rglob(MODULE))
    if len(found) != 1:
        msg = (
            f"the CUDA build left {len(found)} {MODULE} in {build}, not 1: this llama.cpp "
            "builds its CUDA backend differently; update cuda_module.py for it"
        )
        raise BuildError(msg)
    return found[0]
