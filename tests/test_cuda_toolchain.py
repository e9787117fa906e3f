"""The CUDA build toolchain: architecture checks, CMake flags, cuBLAS unpacking, driver stub."""

from __future__ import annotations

import ctypes
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from llamaship_build.cuda_toolchain import (
    CUDA_ERROR_STUB_LIBRARY,
    CudaToolchain,
    CudaToolkit,
    UnsupportedArchError,
    build_driver_stub,
    check_archs,
    cuda_architectures,
    driver_api_names,
    parse_archs,
    parse_release,
    plan_toolchain,
    read_toolkit,
    unpack_cublas,
)
from llamaship_build.elf import Patchelf, find_patchelf
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import (
    normalize_wheel,
)

# Verbatim output of nvcc 13.0 (CUDA 13.0.88), the toolkit DESIGN.md §7 measured.
NVCC_VERSION = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2025 NVIDIA Corporation
Built on Wed_Aug_20_01:58:59_PM_PDT_2025
Cuda compilation tools, release 13.0, V13.0.88
Build cuda_13.0.r13.0/compiler.36424714_0
"""
NVCC_ARCHS = (
    "\n".join(
        f"compute_{arch}"
        for arch in ("75", "80", "86", "87", "88", "89", "90", "100", "110", "103", "120", "121")
    )
    + "\n"
)
CUDA13_ARCHS = ("75", "80", "86", "87", "88", "89", "90", "100", "103", "110", "120", "121")

# A cut-down cuda.h with the constructs that matter: CUDAAPI, a versioned-name macro and a
# function-pointer typedef that must not count as a driver function.
TINY_CUDA_H = """#ifndef TINY_CUDA_H
#define TINY_CUDA_H
#include <stddef.h>
#define CUDAAPI
typedef enum cudaError_enum { CUDA_SUCCESS = 0, CUDA_ERROR_STUB_LIBRARY = 34 } CUresult;
typedef unsigned long long CUdeviceptr;
#define cuMemAlloc cuMemAlloc_v2
CUresult CUDAAPI cuInit(unsigned int Flags);
CUresult CUDAAPI cuMemAlloc(CUdeviceptr *dptr, size_t bytesize);
typedef CUresult (CUDAAPI *PFN_cuInit)(unsigned int Flags);
#endif
"""
GPU_LOCK = """llama-cpp-python==0.3.36 \\
    --hash=sha256:832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
    # via -r gpu.in
nvidia-cublas==13.10.0.20 \\
    --hash=sha256:05929d6a64af9edce1951ff82a514d630fc1a2369bcfe1ab195f5e85266dbfed
    # via -r gpu.in
"""


def toolkit_at(root: Path) -> CudaToolkit:
    return CudaToolkit(root=root, release="13.0", build="13.0.88", archs=CUDA13_ARCHS)


def toolchain_at(tmp_path: Path) -> CudaToolchain:
    return CudaToolchain(
        toolkit=toolkit_at(tmp_path / "cuda"),
        cublas_version="13.10.0.20",
        cublas_root=tmp_path / "cublas",
        driver_stub=tmp_path / "stub/libcuda.so",
    )


def test_nvcc_output_is_parsed() -> None:
    assert parse_release(NVCC_VERSION) == ("13.0", "13.0.88")
    assert parse_archs(NVCC_ARCHS) == CUDA13_ARCHS


@pytest.mark.parametrize("parse", [parse_release, parse_archs])
def test_unreadable_nvcc_output_is_an_error(parse: Callable[[str], object]) -> None:
    with pytest.raises(BuildError, match="nvcc"):
        parse("nvcc: command produced nothing useful")


def test_supported_archs_pass() -> None:
    check_archs(["75", "86", "120a"], CUDA13_ARCHS, "13.0")


def test_sm61_is_refused_with_the_way_out() -> None:
    with pytest.raises(UnsupportedArchError) as raised:
        check_archs(["61", "86"], CUDA13_ARCHS, "13.0")
    message = str(raised.value)
    assert "nvcc 13.0 cannot compile for 61" in message
    assert message.count("cannot compile") == 1
    assert "CUDA 12" in message


def test_a_newer_arch_gets_no_older_toolchain_hint() -> None:
    with pytest.raises(UnsupportedArchError) as raised:
        check_archs(["130"], CUDA13_ARCHS, "13.0")
    assert "cannot compile for 130" in str(raised.value)
    assert "CUDA 12" not in str(raised.value)


@pytest.mark.parametrize("arch", ["sm_75", "7.5", "", "75-real"])
def test_malformed_arch_is_refused(arch: str) -> None:
    with pytest.raises(UnsupportedArchError, match="not an architecture number"):
        check_archs([arch], CUDA13_ARCHS, "13.0")


@pytest.mark.parametrize(
    ("archs", "ptx", "expected"),
    [
        (["75"], ["75"], "75"),
        (["86", "75"], [], "75-real;86-real"),
        (["75"], ["90"], "75-real;90-virtual"),
        (["120a", "75", "100"], ["120a"], "75-real;100-real;120a"),
    ],
)
def test_cmake_architectures(archs: list[str], ptx: list[str], expected: str) -> None:
    assert cuda_architectures(archs, ptx) == expected


def test_no_real_arch_is_an_error() -> None:
    with pytest.raises(UnsupportedArchError, match="at least one"):
        cuda_architectures([], ["75"])


def test_the_toolchain_points_cmake_at_nvcc_cublas_and_the_stub(tmp_path: Path) -> None:
    args = dict(arg.split("=", 1) for arg in toolchain_at(tmp_path).cmake_args())
    assert args["-DCMAKE_CUDA_COMPILER"] == str(tmp_path / "cuda/bin/nvcc")
    assert args["-DCUDAToolkit_ROOT"] == str(tmp_path / "cuda")
    assert args["-DCUDA_cublas_LIBRARY"] == str(tmp_path / "cublas/lib/libcublas.so")
    assert args["-DCUDA_cublasLt_LIBRARY"] == str(tmp_path / "cublas/lib/libcublasLt.so")
    assert args["-DCUDA_cuda_driver_LIBRARY"] == str(tmp_path / "stub/libcuda.so")
    assert args["-DCMAKE_CUDA_STANDARD_INCLUDE_DIRECTORIES"] == str(tmp_path / "cublas/include")


def test_plan_uses_the_locked_cublas_and_a_built_stub(tmp_path: Path) -> None:
    lock = tmp_path / "gpu.txt"
    lock.write_text(GPU_LOCK)
    toolchain = plan_toolchain(toolkit_at(tmp_path / "cuda"), lock, tmp_path / "cache")
    assert toolchain.cublas_version == "13.10.0.20"
    assert toolchain.cublas_root == tmp_path / "cache/cuda-toolchain/nvidia-cublas-13.10.0.20"
    assert (
        toolchain.driver_stub == tmp_path / "cache/cuda-toolchain/libcuda-stub-13.0.88/libcuda.so"
    )


def test_plan_prefers_the_toolkits_own_stub(tmp_path: Path) -> None:
    lock = tmp_path / "gpu.txt"
    lock.write_text(GPU_LOCK)
    stub = tmp_path / "cuda/targets/x86_64-linux/lib/stubs/libcuda.so"
    stub.parent.mkdir(parents=True)
    stub.write_bytes(b"\x7fELF")
    assert plan_toolchain(toolkit_at(tmp_path / "cuda"), lock, tmp_path).driver_stub == stub


def test_plan_needs_a_cublas_pin(tmp_path: Path) -> None:
    lock = tmp_path / "gpu.txt"
    lock.write_text(GPU_LOCK.split("nvidia-cublas")[0])
    with pytest.raises(BuildError, match="pins no nvidia-cublas"):
        plan_toolchain(toolkit_at(tmp_path), lock, tmp_path)


def test_a_folder_without_nvcc_is_no_toolkit(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"holds no CUDA toolkit .*bin/nvcc is missing"):
        read_toolkit(tmp_path)


def write_cublas_wheel(path: Path, members: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for member in members:
            wheel.writestr(member, f"contents of {member}")
    return path


CUBLAS_MEMBERS = [
    "nvidia/cu13/include/cublas_v2.h",
    "nvidia/cu13/include/cublasLt.h",
    "nvidia/cu13/lib/libcublas.so.13",
    "nvidia/cu13/lib/libcublasLt.so.13",
    "nvidia/cu13/lib/libnvblas.so.13",
    "nvidia_cublas-13.10.0.20.dist-info/RECORD",
]


def test_cublas_is_unpacked_with_dev_links(tmp_path: Path) -> None:
    wheel = write_cublas_wheel(tmp_path / "nvidia_cublas.whl", CUBLAS_MEMBERS)
    dest = unpack_cublas(wheel, tmp_path / "toolchain" / "nvidia-cublas-13.10.0.20")
    assert sorted(path.name for path in (dest / "lib").iterdir()) == [
        "libcublas.so",
        "libcublas.so.13",
        "libcublasLt.so",
        "libcublasLt.so.13",
    ]
    assert (dest / "lib/libcublas.so").readlink() == Path("libcublas.so.13")
    assert (
        dest / "lib/libcublasLt.so"
    ).read_text() == "contents of nvidia/cu13/lib/libcublasLt.so.13"
    assert sorted(path.name for path in (dest / "include").iterdir()) == [
        "cublasLt.h",
        "cublas_v2.h",
    ]
    assert [path.name for path in dest.parent.iterdir()] == [dest.name]


def test_a_wheel_without_cublaslt_leaves_nothing_behind(tmp_path: Path) -> None:
    members = [name for name in CUBLAS_MEMBERS if "libcublasLt" not in name]
    wheel = write_cublas_wheel(tmp_path / "broken.whl", members)
    with pytest.raises(BuildError, match=r"lacks libcublasLt\.so"):
        unpack_cublas(wheel, tmp_path / "toolchain" / "nvidia-cublas")
    assert list((tmp_path / "toolchain").iterdir()) == []


def test_driver_api_names_are_the_versioned_functions() -> None:
    preprocessed = subprocess.run(
        ["gcc", "-E", "-P", "-"], input=TINY_CUDA_H, capture_output=True, text=True, check=True
    ).stdout
    assert driver_api_names(preprocessed) == ("cuInit", "cuMemAlloc_v2")


def test_driver_stub_satisfies_a_strict_link_and_answers_stub(tmp_path: Path) -> None:
    header = tmp_path / "include" / "cuda.h"
    header.parent.mkdir()
    header.write_text(TINY_CUDA_H)
    stub = build_driver_stub(header, tmp_path / "stub")
    assert stub == tmp_path / "stub" / "libcuda.so"
    patchelf = Patchelf(find_patchelf())
    assert patchelf.soname(stub.resolve()) == "libcuda.so.1"

    user = tmp_path / "user.c"
    user.write_text(
        '#include "cuda.h"\n'
        "int use(void) { CUdeviceptr p; return cuInit(0) + cuMemAlloc(&p, 4); }\n"
    )
    library = tmp_path / "libuser.so"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-Wl,--no-undefined",
            f"-I{header.parent}",
            f"-L{stub.parent}",
            f"-Wl,-rpath,{stub.parent}",
            "-o",
            str(library),
            str(user),
            "-lcuda",
        ],
        check=True,
    )
    assert "libcuda.so.1" in patchelf.needed(library)
    assert ctypes.CDLL(str(library)).use() == 2 * CUDA_ERROR_STUB_LIBRARY


def test_driver_stub_exports_only_the_driver_api(tmp_path: Path) -> None:
    header = tmp_path / "cuda.h"
    header.write_text(TINY_CUDA_H)
    stub = build_driver_stub(header, tmp_path / "stub")
    user = tmp_path / "user.c"
    user.write_text("int cuNotInTheHeader(void);\nint use(void) { return cuNotInTheHeader(); }\n")
    result = subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-Wl,--no-undefined",
            f"-L{stub.parent}",
            "-o",
            str(tmp_path / "libuser.so"),
            str(user),
            "-lcuda",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "cuNotInTheHeader" in result.stderr


def write_raw_cuda_wheel(path: Path, cuda_in_bin: bytes) -> Path:
    """A raw llama-cpp-python CUDA wheel's layout: the CUDA backend in bin/ and llama_cpp/lib/."""
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("bin/libggml-cuda.so", cuda_in_bin)
        wheel.writestr("bin/libggml-cpu-x64.so", b"cpu backend")
        wheel.writestr("lib/libggml-cuda.so", b"cuda backend")
        wheel.writestr("llama_cpp/__init__.py", b"")
        wheel.writestr("llama_cpp/lib/libggml-cuda.so", b"cuda backend")
        wheel.writestr("llama_cpp_python-0.3.36.dist-info/RECORD", b"")
    return path


def test_normalizing_a_cuda_wheel_stores_the_cuda_backend_once(tmp_path: Path) -> None:
    raw = write_raw_cuda_wheel(
        tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl", b"cuda backend"
    )
    (tmp_path / "out").mkdir()
    with zipfile.ZipFile(normalize_wheel(raw, tmp_path / "out")) as wheel:
        names = wheel.namelist()
        record = wheel.read("llama_cpp_python-0.3.36.dist-info/RECORD").decode()
    assert names.count("llama_cpp/lib/libggml-cuda.so") == 1
    assert "llama_cpp/lib/libggml-cpu-x64.so" in names
    assert record.count("llama_cpp/lib/libggml-cuda.so,") == 1


def test_two_different_cuda_backends_are_refused(tmp_path: Path) -> None:
    raw = write_raw_cuda_wheel(
        tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl", b"a stale cuda backend"
    )
    (tmp_path / "out").mkdir()
    with pytest.raises(BuildError, match=r"two different libggml-cuda\.so"):
        normalize_wheel(raw, tmp_path / "out")
