"""What a CUDA build of llama.cpp needs beyond nvcc: cuBLAS and a `libcuda` to link against.

A minimal CUDA toolkit (nvcc, cudart and headers, e.g. assembled from NVIDIA's pip wheels) has
neither cuBLAS nor the driver stub `libcuda.so`, and CMake's FindCUDAToolkit then fails with
"CUDA::cublas target not found". cuBLAS comes from the `nvidia-cublas` wheel pinned in
requirements/gpu.txt (the bytes the overlay ships); the driver stub is the toolkit's own
`lib64/stubs/libcuda.so` when it has one, else compiled here from `cuda.h`. The stub exports
every driver API function (each returns CUDA_ERROR_STUB_LIBRARY), so any link against it
resolves; it is never shipped: the user's driver provides the real `libcuda.so.1`.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llamaship_build import locks
from llamaship_build.errors import BuildError

_log = logging.getLogger(__name__)

CUBLAS_PACKAGE = "nvidia-cublas"
DRIVER_SONAME = "libcuda.so.1"
# cuda.h: "the CUDA driver that the application has loaded is a stub library".
CUDA_ERROR_STUB_LIBRARY = 34
_RELEASE = re.compile(r"release (\d+\.\d+), V(\d+\.\d+\.\d+)")
_COMPUTE = re.compile(r"\bcompute_(\d+)\b")
_ARCH = re.compile(r"^(\d{2,3})([af]?)$")
_DRIVER_FUNCTION = re.compile(r"\bCUresult\s+(cu[A-Za-z0-9_]+)\s*\(")
_CUBLAS_LIBRARY = re.compile(r"^(libcublas(?:Lt)?\.so)\.\d+$")


class UnsupportedArchError(BuildError):
    """A requested CUDA architecture is malformed or the toolkit's nvcc cannot target it."""


@dataclass(frozen=True)
class CudaToolkit:
    """An installed CUDA toolkit: its root, nvcc's version and the architectures it targets."""

    root: Path
    release: str  # "13.0"
    build: str  # "13.0.88"
    archs: tuple[str, ...]  # ("75", "80", ...): every compute_XX nvcc lists

    @property
    def nvcc(self) -> Path:
        return self.root / "bin" / "nvcc"

    @property
    def cuda_header(self) -> Path:
        return self.root / "include" / "cuda.h"

    def driver_stub(self) -> Path | None:
        """The toolkit's own `libcuda.so` stub, when it ships one."""
        for stubs in (self.root / "lib64" / "stubs", *self.root.glob("targets/*/lib/stubs")):
            if (stubs / "libcuda.so").is_file():
                return stubs / "libcuda.so"
        return None


def _run(command: Sequence[str], what: str) -> str:
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    except OSError as error:
        msg = f"{what} failed: cannot run {command[0]} ({error})"
        raise BuildError(msg) from None
    if result.returncode != 0:
        msg = f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
        raise BuildError(msg)
    return result.stdout


def parse_release(version_text: str) -> tuple[str, str]:
    """("13.0", "13.0.88") from `nvcc --version`."""
    match = _RELEASE.search(version_text)
    if match is None:
        msg = f"cannot read the CUDA release from `nvcc --version`: {version_text.strip()!r}"
        raise BuildError(msg)
    return match.group(1), match.group(2)


def parse_archs(list_text: str) -> tuple[str, ...]:
    """The architecture numbers of `nvcc --list-gpu-arch` ("compute_75" -> "75"), ascending."""
    archs = sorted(set(_COMPUTE.findall(list_text)), key=int)
    if not archs:
        msg = f"`nvcc --list-gpu-arch` listed no compute_XX architecture: {list_text.strip()!r}"
        raise BuildError(msg)
    return tuple(archs)


def read_toolkit(root: Path) -> CudaToolkit:
    """The toolkit at `root`: nvcc's release and the architectures it targets."""
    nvcc = root / "bin" / "nvcc"
    if not nvcc.is_file():
        msg = f"{root} holds no CUDA toolkit ({nvcc} is missing): delete it to unpack it again"
        raise BuildError(msg)
    release, build = parse_release(_run([str(nvcc), "--version"], "nvcc --version"))
    archs = parse_archs(_run([str(nvcc), "--list-gpu-arch"], "nvcc --list-gpu-arch"))
    return CudaToolkit(root=root, release=release, build=build, archs=archs)


def check_archs(archs: Sequence[str], supported: Sequence[str], release: str) -> None:
    """Refuse malformed architectures and those nvcc `release` cannot compile for."""
    problems = []
    for arch in archs:
        match = _ARCH.match(arch)
        if match is None:
            problems.append(
                f"{arch!r} is not an architecture number (write 75 for sm_75 / "
                "compute capability 7.5)"
            )
        elif match.group(1) not in supported:
            problems.append(
                f"nvcc {release} cannot compile for {arch} (it targets {', '.join(supported)})"
            )
    if problems:
        older = [arch for arch in archs if 0 < _arch_order(arch)[0] < int(supported[0])]
        hint = (
            f". {', '.join(older)} predate nvcc {release}'s oldest target (GTX 10xx is "
            "61): build for them with an older CUDA toolchain (CUDA 12 targets 50-90) in "
            "release CI or use the official cu12x wheels, or drop them from the list"
            if older
            else ""
        )
        msg = "unsupported CUDA architectures: " + "; ".join(problems) + hint
        raise UnsupportedArchError(msg)


def _arch_order(arch: str) -> tuple[int, str]:
    match = _ARCH.match(arch)
    return (int(match.group(1)) if match else 0, arch)


def cuda_architectures(archs: Sequence[str], ptx_archs: Sequence[str] = ()) -> str:
    """The CMAKE_CUDA_ARCHITECTURES value: "75" = SASS + PTX, "75-real", "75-virtual"."""
    if not archs:
        msg = "no CUDA architecture given: name at least one real architecture, e.g. 75"
        raise UnsupportedArchError(msg)
    entries = []
    for arch in sorted(set(archs) | set(ptx_archs), key=_arch_order):
        if arch in archs and arch in ptx_archs:
            entries.append(arch)
        else:
            entries.append(f"{arch}-real" if arch in archs else f"{arch}-virtual")
    return ";".join(entries)


@dataclass(frozen=True)
class CudaToolchain:
    """A toolkit plus the cuBLAS and driver stub for it: paths, made by `prepare_toolchain`."""

    toolkit: CudaToolkit
    cublas_version: str
    cublas_root: Path  # lib/ (libcublas*.so.N + dev links) and include/ (cublas headers)
    driver_stub: Path  # the `libcuda.so` to link against

    @property
    def cublas_lib_dir(self) -> Path:
        return self.cublas_root / "lib"

    @property
    def cublas_include_dir(self) -> Path:
        return self.cublas_root / "include"

    def cmake_args(self) -> tuple[str, ...]:
        """CMake cache entries that point FindCUDAToolkit at this toolchain."""
        return (
            f"-DCMAKE_CUDA_COMPILER={self.toolkit.nvcc}",
            f"-DCUDAToolkit_ROOT={self.toolkit.root}",
            f"-DCUDA_cublas_LIBRARY={self.cublas_lib_dir / 'libcublas.so'}",
            f"-DCUDA_cublasLt_LIBRARY={self.cublas_lib_dir / 'libcublasLt.so'}",
            f"-DCUDA_cuda_driver_LIBRARY={self.driver_stub}",
            # FindCUDAToolkit gives CUDA::cublas the toolkit's include dir only.
            f"-DCMAKE_CUDA_STANDARD_INCLUDE_DIRECTORIES={self.cublas_include_dir}",
        )


def plan_toolchain(toolkit: CudaToolkit, lock: Path, cache: Path) -> CudaToolchain:
    """Where the toolchain for `toolkit` and the lock's cuBLAS pin lives under `cache`."""
    version = locks.pins(lock).get(CUBLAS_PACKAGE)
    if version is None:
        msg = f"{lock} pins no {CUBLAS_PACKAGE}: add it to requirements/gpu.in, run `nox -s lock`"
        raise BuildError(msg)
    home = cache / "cuda-toolchain"
    stub = toolkit.driver_stub() or home / f"libcuda-stub-{toolkit.build}" / "libcuda.so"
    return CudaToolchain(
        toolkit=toolkit,
        cublas_version=version,
        cublas_root=home / f"{CUBLAS_PACKAGE}-{version}",
        driver_stub=stub,
    )


def prepare_toolchain(toolchain: CudaToolchain, lock: Path, wheels: Path) -> None:
    """Materialize what `toolchain` names: download and unpack cuBLAS, build the driver stub.

    `wheels`: download folder for the hash-checked `nvidia-cublas` wheel (shared with the
    overlay's runtime layer, so it is fetched once). Each part is skipped when present.
    """
    if not toolchain.cublas_root.is_dir():
        # Imported here: the overlay builder is the owner of the pinned runtime downloads.
        from llamaship_build.overlay_build import download_runtime_wheels

        _log.info(
            "downloading %s %s (about 450 MB) into %s",
            CUBLAS_PACKAGE,
            toolchain.cublas_version,
            wheels,
        )
        (wheel,) = download_runtime_wheels(lock, wheels, packages=(CUBLAS_PACKAGE,))
        unpack_cublas(wheel, toolchain.cublas_root)
    if not toolchain.driver_stub.is_file():
        build_driver_stub(toolchain.toolkit.cuda_header, toolchain.driver_stub.parent)


def _cublas_destination(name: str) -> str | None:
    path = PurePosixPath(name)
    if _CUBLAS_LIBRARY.match(path.name) and path.parent.name == "lib":
        return f"lib/{path.name}"
    if path.suffix == ".h" and path.parent.name == "include":
        return f"include/{path.name}"
    return None


def unpack_cublas(wheel: Path, dest: Path) -> Path:
    """Unpack the cuBLAS libraries and headers of an `nvidia-cublas` wheel into `dest`.

    Layout: `lib/libcublas.so.N`, `lib/libcublasLt.so.N` plus the unversioned links a linker
    looks for, and `include/*.h`. Written to a staging folder, then renamed into place.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as staging_text:
        staging = Path(staging_text) / dest.name
        links: dict[str, str] = {}
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                target = _cublas_destination(info.filename)
                if target is None:
                    continue
                path = staging / target
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(path, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                match = _CUBLAS_LIBRARY.match(path.name)
                if match:
                    links[match.group(1)] = path.name
        missing = [name for name in ("libcublas.so", "libcublasLt.so") if name not in links]
        if not (staging / "include" / "cublas_v2.h").is_file():
            missing.append("cublas_v2.h")
        if missing:
            msg = (
                f"{wheel.name} lacks {', '.join(missing)} under nvidia/*/lib or include: "
                f"is it an {CUBLAS_PACKAGE} wheel?"
            )
            raise BuildError(msg)
        for link, versioned in links.items():
            (staging / "lib" / link).symlink_to(versioned)
        staging.rename(dest)
    return dest


def driver_api_names(preprocessed_header: str) -> tuple[str, ...]:
    """Every driver API function declared in preprocessed `cuda.h` (versioned names, e.g.
    cuMemAlloc_v2, as compiled code references them)."""
    names = tuple(sorted(set(_DRIVER_FUNCTION.findall(preprocessed_header))))
    if not names:
        msg = "found no `CUresult cu...(` declaration in the preprocessed cuda.h"
        raise BuildError(msg)
    return names


def build_driver_stub(cuda_header: Path, out_dir: Path, compiler: str = "gcc") -> Path:
    """Compile `out_dir/libcuda.so.1` (+ `libcuda.so` link) exporting the driver API of
    `cuda_header`; returns the `libcuda.so` path."""
    preprocessed = _run(
        [compiler, "-E", "-P", f"-I{cuda_header.parent}", str(cuda_header)],
        f"preprocessing {cuda_header}",
    )
    names = driver_api_names(preprocessed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f".{out_dir.name}-", dir=out_dir.parent
    ) as staging_text:
        staging = Path(staging_text) / out_dir.name
        staging.mkdir()
        source = staging / "libcuda-stub.c"
        source.write_text(
            "/* Link-time stand-in for the NVIDIA driver; never shipped. */\n"
            + "".join(
                f"int {name}(void) {{ return {CUDA_ERROR_STUB_LIBRARY}; }}\n" for name in names
            )
        )
        _run(
            [
                compiler,
                "-shared",
                "-fPIC",
                "-O1",
                f"-Wl,-soname,{DRIVER_SONAME}",
                "-o",
                str(staging / DRIVER_SONAME),
                str(source),
            ],
            "compiling the libcuda stub",
        )
        (staging / "libcuda.so").symlink_to(DRIVER_SONAME)
        staging.rename(out_dir)
    _log.info("built a libcuda stub exporting %d driver functions in %s", len(names), out_dir)
    return out_dir / "libcuda.so"
