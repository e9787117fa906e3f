"""The CUDA backend module's compile: a toolkit from NVIDIA's pinned wheels, nvcc's fat-binary
compression, the cache key; and nvcc itself running in the Debian 11 root (root, real wheels).

The module's own compile (about 25 minutes per architecture here) stays out of the test run:
`nox -s overlay -- --source build` does it, and docs/benchmarks.md records what it measured.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from llamaship_build.cuda_module import (
    MODULE,
    cached_module,
    cuda_flags,
    module_key,
)
from llamaship_build.cuda_toolchain import CudaToolchain, CudaToolkit
from llamaship_build.cuda_toolkit import toolkit_key, unpack_toolkit
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import PORTABLE, Pin
from llamaship_build.module_slot import BUILD_RECORD

REPO = Path(__file__).resolve().parents[1]
PIN = Pin("0.3.36", ("a" * 64,))


def write_wheel(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    """A wheel-shaped zip: name -> (bytes, unix mode)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, (data, mode) in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(info, data)
    return path


def test_the_wheels_become_one_toolkit_with_their_executable_bits(tmp_path: Path) -> None:
    nvcc = write_wheel(
        tmp_path / "nvidia_cuda_nvcc-13.5.37-py3-none-manylinux2014_x86_64.whl",
        {
            "nvidia/cu13/bin/nvcc": (b"#!/bin/sh\n", 0o755),
            "nvidia/cu13/bin/nvcc.profile": (b"TOP = $(_HERE_)/..\n", 0o644),
            "nvidia_cuda_nvcc-13.5.37.dist-info/RECORD": (b"", 0o644),
        },
    )
    runtime = write_wheel(
        tmp_path / "nvidia_cuda_runtime-13.5.37-py3-none-manylinux2014_x86_64.whl",
        {
            "nvidia/cu13/lib/libcudart.so.13": (b"\x7fELF", 0o644),
            "nvidia/cu13/include/cuda_runtime.h": (b"", 0o644),
        },
    )
    root = unpack_toolkit([nvcc, runtime], tmp_path / "toolkit")
    assert (root / "bin" / "nvcc").stat().st_mode & stat.S_IXUSR
    assert not (root / "bin" / "nvcc.profile").stat().st_mode & stat.S_IXUSR
    assert (root / "lib" / "libcudart.so").readlink() == Path("libcudart.so.13")
    assert (root / "include" / "cuda_runtime.h").is_file()
    assert not (root / "nvidia_cuda_nvcc-13.5.37.dist-info").exists()
    assert toolkit_key([nvcc, runtime]) == toolkit_key([runtime, nvcc])


def test_wheels_without_nvcc_leave_no_toolkit(tmp_path: Path) -> None:
    runtime = write_wheel(
        tmp_path / "nvidia_cuda_runtime-13.5.37-py3-none-any.whl",
        {"nvidia/cu13/lib/libcudart.so.13": (b"", 0o644)},
    )
    with pytest.raises(BuildError, match="no nvidia/cu13/bin/nvcc"):
        unpack_toolkit([runtime], tmp_path / "toolkit")
    assert not (tmp_path / "toolkit").exists()


def test_a_wheel_path_leaving_the_toolkit_is_refused(tmp_path: Path) -> None:
    hostile = write_wheel(
        tmp_path / "nvidia_cuda_nvcc-13.5.37-py3-none-any.whl",
        {"nvidia/cu13/../../escape": (b"", 0o644)},
    )
    with pytest.raises(BuildError, match="unsafe path"):
        unpack_toolkit([hostile], tmp_path / "toolkit")
    assert not (tmp_path / "escape").exists()


def toolchain_at(tmp_path: Path) -> CudaToolchain:
    toolkit = CudaToolkit(tmp_path / "cuda", "13.5", "13.5.37", ("75", "80", "120"))
    return CudaToolchain(toolkit, "13.10.0.20", tmp_path / "cublas", tmp_path / "stub/libcuda.so")


def test_the_module_gets_the_bundles_portable_flags_plus_cuda(tmp_path: Path) -> None:
    flags = cuda_flags("75-real;120-virtual", "size", toolchain_at(tmp_path))
    assert flags[: len(PORTABLE.cmake_args)] == PORTABLE.cmake_args
    assert "-DGGML_CUDA=ON" in flags
    # ggml passes it to nvcc last: a -compress-mode in CUDAFLAGS would lose to it.
    assert "-DGGML_CUDA_COMPRESSION_MODE=size" in flags
    assert "-DCMAKE_CUDA_ARCHITECTURES=75-real;120-virtual" in flags
    assert f"-DCUDAToolkit_ROOT={tmp_path / 'cuda'}" in flags


def test_compression_architectures_and_toolkit_each_key_their_own_module(tmp_path: Path) -> None:
    toolchain = toolchain_at(tmp_path)
    base = {"cmake_args": cuda_flags("75", "size", toolchain), "nvcc": "13.5.37", "cublas": "13.10"}
    keys = {
        module_key(PIN, "debian11", base),
        module_key(PIN, "debian11", {**base, "cmake_args": cuda_flags("75", "none", toolchain)}),
        module_key(PIN, "debian11", {**base, "cmake_args": cuda_flags("80", "size", toolchain)}),
        module_key(PIN, "debian11", {**base, "nvcc": "13.6.1"}),
        module_key(PIN, "host", base),
    }
    assert len(keys) == 5
    assert module_key(PIN, "debian11", base) == module_key(PIN, "debian11", dict(base))


def test_only_a_complete_slot_is_a_cached_module(tmp_path: Path) -> None:
    slot = tmp_path / "cuda" / "k"
    slot.mkdir(parents=True)
    (slot / MODULE).write_bytes(b"\x7fELF")
    assert cached_module(tmp_path, "k") is None
    (slot / BUILD_RECORD).write_text('{"compress_mode": "size"}')
    found = cached_module(tmp_path, "k")
    assert found is not None and found.record["compress_mode"] == "size"


KERNEL = """
extern "C" __global__ void scale(float *x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= a;
}
"""


@pytest.mark.slow
@pytest.mark.root
def test_nvcc_from_the_pinned_wheels_compiles_in_the_debian_11_root(tmp_path: Path) -> None:
    """The compiler the CUDA layer is built with: downloaded by the lock's hashes (130 MB,
    cached), run inside the Debian 11 root with its clang as the host compiler; the library
    holds sm_75 code, compressed, and needs no glibc newer than Debian 11's."""
    from llamaship_build.cuda_toolkit import ensure_toolkit
    from llamaship_build.debian_root import COMPILERS
    from llamaship_build.fatbin import library_archs
    from llamaship_build.glibc import GLIBC, glibc_floors
    from llamaship_build.project import cache_dir
    from llamaship_build.toolchain import default_toolchain

    toolkit = ensure_toolkit(REPO / "requirements", cache_dir())
    assert toolkit.release.startswith("13.") and "75" in toolkit.archs
    toolchain = default_toolchain((toolkit.root,))
    with toolchain.scratch() as scratch:
        (scratch / "scale.cu").write_text(KERNEL)
        toolchain.run(
            [
                str(toolkit.nvcc),
                f"-ccbin={COMPILERS['CXX']}",
                "-arch=sm_75",
                "--compress-mode=size",
                "-Xfatbin=-compress-all",
                "-shared",
                "-Xcompiler=-fPIC",
                "-o",
                toolchain.inside(scratch / "libscale.so"),
                toolchain.inside(scratch / "scale.cu"),
            ],
            what="compiling a kernel with nvcc in the build root",
        )
        library = scratch / "libscale.so"
        archs = library_archs(library)
        assert archs is not None and archs.sass == ("75",)
        (glibc,) = glibc_floors(scratch, (GLIBC,))
        assert glibc.version <= (2, 31), glibc.text()
