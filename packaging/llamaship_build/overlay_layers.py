"""The CUDA overlay's `cuda-runtime` layer from NVIDIA's wheels, and the CUDA backend module
out of a llama-cpp-python CUDA wheel (Linux).

cuda-runtime: `lib/` with the CUDA libraries the llama-cuda layer's module needs (its DT_NEEDED
closure), taken unmodified from NVIDIA's `nvidia-*` wheels, and `licenses/<wheel name>/` with
the licence files of each wheel that provided one (NVIDIA's terms for redistributing them).
The llama-cuda layer itself (the module alone) is `cuda_layer`'s.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from llamaship_build.elf import Patchelf
from llamaship_build.errors import BuildError

RUNPATH = "$ORIGIN"
# Provided by the user's system (glibc, the GCC runtime) or by the NVIDIA driver (libcuda):
# never shipped, never an error when no wheel provides them.
SYSTEM_LIBRARIES = frozenset(
    {
        "ld-linux-x86-64.so.2",
        "libc.so.6",
        "libdl.so.2",
        "libm.so.6",
        "libpthread.so.0",
        "librt.so.1",
        "libstdc++.so.6",
        "libgcc_s.so.1",
        "libgomp.so.1",
        "libcuda.so.1",
    }
)
_SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")
_RUNTIME_LIBRARY = re.compile(r"^nvidia/[^/]+/lib/([^/]+)$")
_LICENCE_FILE = re.compile(r"^[^/]+\.dist-info/(?:licenses/)?(License[^/]*|LICENSE[^/]*)$")
LICENSES_DIR = "licenses"
# llama.cpp's licence (MIT), shipped beside every backend module (packaging/licenses/).
LLAMA_CPP_LICENSE = Path(__file__).resolve().parents[1] / "licenses" / "llama.cpp-LICENSE.txt"
CUDA_MODULE = "libggml-cuda.so"
# Where llama-cpp-python CUDA wheels keep the module: the raw build's `bin/`, else the package.
_MODULE_MEMBERS = (f"bin/{CUDA_MODULE}", f"llama_cpp/lib/{CUDA_MODULE}")
_CHUNK = 1 << 20


def _copy_member(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, mode: int
) -> None:
    """Extract one member to `target` (mode set)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(member) as source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink, _CHUNK)
    target.chmod(mode)


def module_from_wheel(wheel: Path, dest_dir: Path) -> Path:
    """Copy the CUDA backend module out of a llama-cpp-python CUDA wheel into `dest_dir`.

    The wheel must come from the same sdist and portable flags as the bundle (the bundle's
    ggml loads the module); `bin/libggml-cuda.so` is taken, else `llama_cpp/lib/`'s copy.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            member = next((name for name in _MODULE_MEMBERS if name in names), None)
            if member is None:
                msg = (
                    f"{wheel} holds no {CUDA_MODULE} (looked for {', '.join(_MODULE_MEMBERS)}): "
                    "it is not a CUDA build of llama-cpp-python (-DGGML_CUDA=ON)"
                )
                raise BuildError(msg)
            target = dest_dir / CUDA_MODULE
            _copy_member(archive, archive.getinfo(member), target, 0o755)
    except (OSError, zipfile.BadZipFile) as error:
        msg = f"cannot read the CUDA wheel {wheel}: {error}"
        raise BuildError(msg) from None
    return target


def _runtime_index(wheels: Sequence[Path]) -> dict[str, tuple[Path, str]]:
    index: dict[str, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                match = _RUNTIME_LIBRARY.match(name)
                if match and _SHARED_LIBRARY.search(match.group(1)):
                    index.setdefault(match.group(1), (wheel, name))
    return index


def stage_runtime_layer(
    wheels: Sequence[Path], wanted: Iterable[str], root: Path, patchelf: Patchelf
) -> tuple[str, ...]:
    """Copy `wanted` and the libraries they need in turn from the `nvidia-*` wheels into
    `root/lib/`, unmodified; returns the shipped file names."""
    index = _runtime_index(wheels)
    queue = sorted(set(wanted))
    shipped: set[str] = set()
    needed_by: dict[str, set[str]] = defaultdict(set)
    missing: set[str] = set()
    while queue:
        name = queue.pop(0)
        if name in shipped or name in SYSTEM_LIBRARIES:
            continue
        if name not in index:
            missing.add(name)
            continue
        wheel, member = index[name]
        target = root / "lib" / name
        with zipfile.ZipFile(wheel) as archive:
            _copy_member(archive, archive.getinfo(member), target, 0o755)
        shipped.add(name)
        for dependency in patchelf.needed(target):
            needed_by[dependency].add(name)
            queue.append(dependency)
    if not missing:
        _copy_licences(sorted({index[name][0] for name in shipped}), root / LICENSES_DIR)
    if missing:
        details = "; ".join(
            f"{name} (needed by {', '.join(sorted(needed_by[name])) or 'the CUDA backend module'})"
            for name in sorted(missing)
        )
        names = ", ".join(wheel.name for wheel in wheels) or "none"
        msg = (
            f"the CUDA runtime layer lacks {details}: no runtime wheel provides them "
            f"(wheels: {names}); add the nvidia-* wheel that ships them to requirements/gpu.in"
        )
        raise BuildError(msg)
    return tuple(sorted(shipped))


def _copy_licences(wheels: Sequence[Path], dest: Path) -> None:
    """Copy each wheel's licence files to `dest/<distribution>/`; a wheel without one fails."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            members = [info for info in archive.infolist() if _LICENCE_FILE.match(info.filename)]
            if not members:
                msg = (
                    f"{wheel.name} carries no licence file (*.dist-info/License.txt): its "
                    "libraries cannot be redistributed without NVIDIA's terms"
                )
                raise BuildError(msg)
            distribution = members[0].filename.split("/")[0].removesuffix(".dist-info")
            for member in members:
                name = member.filename.rsplit("/", 1)[-1]
                _copy_member(archive, member, dest / distribution.split("-")[0] / name, 0o644)
