"""A broken NVIDIA driver for the CUDA build: a libcuda.so.1 whose cuInit fails, and a stand-in
libcublas.so.13 (the real one, 444 MB, belongs to the overlay's runtime layer and is left out of
the test overlay); and a backend module that crashes whatever loads it.

libggml-cuda.so needs both to load at all; with them it loads, libcudart asks the stub driver,
and llama.cpp logs its own "failed to initialize CUDA" line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

CUDA_ERROR_NO_DEVICE = 100
# Driver API functions libggml-cuda.so links against, plus what libcudart asks the driver.
DRIVER_FUNCTIONS = (
    "cuDeviceGet",
    "cuDeviceGetAttribute",
    "cuGetErrorString",
    "cuMemAddressFree",
    "cuMemAddressReserve",
    "cuMemCreate",
    "cuMemGetAllocationGranularity",
    "cuMemMap",
    "cuMemRelease",
    "cuMemSetAccess",
    "cuMemUnmap",
    "cuGetProcAddress",
    "cuGetProcAddress_v2",
)
_STUB_LIBCUDA = """\
/* A libcuda.so.1 whose cuInit fails: a driver that is installed but cannot start. */
int cuInit(unsigned int flags) { (void)flags; return %(error)d; }
int cuDriverGetVersion(int *version) { *version = 13000; return 0; }
%(others)s
"""


def _gcc(source: str, library: Path, version_script: str | None = None) -> Path:
    """Compile `source` into the shared library `library` (its name is the soname)."""
    build = library.parent.parent / f"build-{library.name}"  # sources beside, not inside
    build.mkdir(parents=True, exist_ok=True)
    (build / "stub.c").write_text(source)
    command = [
        "gcc",
        "-shared",
        "-fPIC",
        "-O2",
        f"-Wl,-soname,{library.name}",
        "-o",
        str(library),
        str(build / "stub.c"),
    ]
    if version_script is not None:
        (build / "stub.map").write_text(version_script)
        command.insert(1, f"-Wl,--version-script={build / 'stub.map'}")
    library.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, check=True, capture_output=True, text=True)
    return library


def compile_failing_libcuda(directory: Path) -> Path:
    """`directory/libcuda.so.1`: every driver call fails with CUDA_ERROR_NO_DEVICE."""
    others = "\n".join(
        f"int {name}(void) {{ return {CUDA_ERROR_NO_DEVICE}; }}" for name in DRIVER_FUNCTIONS
    )
    return _gcc(
        _STUB_LIBCUDA % {"error": CUDA_ERROR_NO_DEVICE, "others": others},
        directory / "libcuda.so.1",
    )


def compile_stand_in_cublas(ggml_cuda: Path, directory: Path) -> Path:
    """`directory/libcublas.so.13` with the versioned symbols `ggml_cuda` (libggml-cuda.so)
    needs; never called, since CUDA initialisation fails first."""
    symbols = subprocess.run(
        ["nm", "-D", "--undefined-only", str(ggml_cuda)], check=True, capture_output=True, text=True
    ).stdout
    names = sorted(
        {
            line.split()[-1].split("@")[0]
            for line in symbols.splitlines()
            if "@libcublas.so.13" in line
        }
    )
    if not names:
        msg = f"{ggml_cuda} links no cuBLAS 13 symbol: not the CUDA build the tests expect"
        raise ValueError(msg)
    source = "\n".join(f"int {name}(void) {{ return 1; }}" for name in names)
    script = "libcublas.so.13 { global: " + " ".join(f"{name};" for name in names) + " local: *; };"
    return _gcc(source, directory / "libcublas.so.13", script)


_CRASHING_MODULE = """\
/* A backend module whose loading kills the process, as a broken GPU library can. */
#include <signal.h>
__attribute__((constructor)) static void crash(void) { raise(SIGSEGV); }
void *ggml_backend_init(void) { return 0; }
"""


def compile_crashing_module(library: Path) -> Path:
    """`library` (e.g. .../libggml-cuda.so): SIGSEGV as soon as it is loaded."""
    return _gcc(_CRASHING_MODULE, library)
