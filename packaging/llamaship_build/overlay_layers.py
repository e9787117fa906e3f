"""Lay out the two overlay layers from wheels: `llama-cuda` and `cuda-runtime` (Linux).

llama-cuda: the `llama_cpp/` package of a llama-cpp-python wheel with every native library in
`llama_cpp/lib/`: the ggml backends the raw wheel puts in a top-level `bin/` move there, the
top-level `lib/`, `include/` and the `.dist-info` are dropped, and each library is kept once,
under its SONAME (the name other libraries link); the other names of it that something uses
(`libllama.so`, which llama_cpp loads, or `libggml.so`, which `llama_cpp._ggml` loads) become
relative symlinks, so every loader gets the same instance. Every ELF's RUNPATH becomes
`$ORIGIN`; the CUDA runtime libraries are preloaded from the other layer at activation.
`llama_cpp/LICENSES/` holds the licences of llama-cpp-python and llama.cpp (both MIT).

cuda-runtime: `lib/` with the CUDA libraries the llama-cuda layer needs (the DT_NEEDED closure),
taken unmodified from NVIDIA's `nvidia-*` wheels, and `licenses/<wheel name>/` with the licence
files of each wheel that provided one (NVIDIA's terms for redistributing them).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from llamaship_build.elf import Patchelf, is_elf
from llamaship_build.errors import BuildError
from llamaship_build.fit_tool import add_to_layer
from llamaship_contract.overlay_fields import safe_relative_path

PACKAGE_DIR = "llama_cpp"
LIB_DIR = f"{PACKAGE_DIR}/lib"
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
# How llama_cpp's modules name the libraries they load: load_shared_library("ggml", ...) or
# _lib_base_name = "llama" followed by load_shared_library(_lib_base_name, ...).
_LOADED_NAME = re.compile(r'load_shared_library\(\s*"([\w.-]+)"|_base_name\s*=\s*"([\w.-]+)"')
_RUNTIME_LIBRARY = re.compile(r"^nvidia/[^/]+/lib/([^/]+)$")
_LICENCE_FILE = re.compile(r"^[^/]+\.dist-info/(?:licenses/)?(License[^/]*|LICENSE[^/]*)$")
LICENSES_DIR = "licenses"
# In the llama-cuda layer (whose only top-level directory is the package): the licences of
# llama-cpp-python and of the llama.cpp it is built from (kept in packaging/licenses/).
LLAMA_LICENSES_DIR = f"{PACKAGE_DIR}/LICENSES"
LLAMA_CPP_LICENSE = Path(__file__).resolve().parents[1] / "licenses" / "llama.cpp-LICENSE.txt"
_MANYLINUX = re.compile(r"^(?:many|musl)linux(?:_\d+_\d+|\d+)_(\w+)$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelInfo:
    """What a wheel's `.dist-info` says about it."""

    name: str
    version: str
    python_tag: str
    platform: str


def _platform_tag(tag: str) -> str:
    # A manylinux wheel (e.g. manylinux_2_17_x86_64.manylinux2014_x86_64) is a linux_<arch> one.
    first = tag.split(".")[0]
    match = _MANYLINUX.match(first)
    return f"linux_{match.group(1)}" if match else first


def read_wheel_info(wheel: Path) -> WheelInfo:
    """Name, version and first tag from the wheel's METADATA and WHEEL files."""
    with zipfile.ZipFile(wheel) as archive:
        dist_infos = sorted(
            {
                name.split("/")[0]
                for name in archive.namelist()
                if name.split("/")[0].endswith(".dist-info")
            }
        )
        if len(dist_infos) != 1:
            msg = f"{wheel} is not a wheel: it holds {len(dist_infos)} .dist-info directories"
            raise BuildError(msg)
        parser = HeaderParser()
        metadata = parser.parsestr(archive.read(f"{dist_infos[0]}/METADATA").decode())
        wheel_file = parser.parsestr(archive.read(f"{dist_infos[0]}/WHEEL").decode())
    tag = wheel_file.get("Tag", "")
    parts = tag.split("-")
    if len(parts) != 3:
        msg = f"{wheel} has no valid Tag in its WHEEL file (got {tag!r})"
        raise BuildError(msg)
    return WheelInfo(
        name=str(metadata["Name"]),
        version=str(metadata["Version"]),
        python_tag=parts[0],
        platform=_platform_tag(parts[2]),
    )


def _copy_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, mode: int) -> str:
    """Extract one member to `target` (mode set), returning its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with archive.open(member) as source, open(target, "wb") as sink:
        for block in iter(lambda: source.read(_CHUNK), b""):
            digest.update(block)
            sink.write(block)
    target.chmod(mode)
    return digest.hexdigest()


def _loaded_library_names(package: Path) -> frozenset[str]:
    """The file names llama_cpp's Python modules dlopen by name (e.g. libllama.so)."""
    names: set[str] = set()
    for module in sorted(package.glob("*.py")):
        for match in _LOADED_NAME.finditer(module.read_text(encoding="utf-8")):
            names.add(f"lib{match.group(1) or match.group(2)}.so")
    return frozenset(names)


@dataclass
class _Library:
    """One distinct native library of the wheel and every name the wheel stores it under."""

    scratch: Path
    names: set[str]


def _is_native(name: str) -> bool:
    top, _, rest = name.partition("/")
    basename = name.rsplit("/", 1)[-1]
    in_lib_dir = name.startswith(f"{LIB_DIR}/") and "/" not in name[len(LIB_DIR) + 1 :]
    in_bin = top == "bin" and "/" not in rest
    return (in_lib_dir or in_bin) and bool(_SHARED_LIBRARY.search(basename))


def _extract_package(wheel: Path, root: Path, scratch: Path) -> dict[str, _Library]:
    """Write llama_cpp's non-native files under `root`; native libraries, one per content,
    into `scratch`. Returns the libraries keyed by content sha256."""
    libraries: dict[str, _Library] = {}
    with zipfile.ZipFile(wheel) as archive:
        for member in sorted(archive.infolist(), key=lambda info: info.filename):
            name = member.filename
            if member.is_dir():
                continue
            unsafe = safe_relative_path(name)
            if unsafe:
                msg = f"{wheel} holds an unsafe path {name!r} ({unsafe}): refusing to use it"
                raise BuildError(msg)
            if _is_native(name):
                staged = scratch / f"{len(libraries)}.so"
                digest = _copy_member(archive, member, staged, 0o755)
                if not is_elf(staged):
                    msg = f"{wheel}: {name} is named like a shared library but is not ELF"
                    raise BuildError(msg)
                if digest in libraries:
                    staged.unlink()
                    libraries[digest].names.add(name.rsplit("/", 1)[-1])
                else:
                    libraries[digest] = _Library(staged, {name.rsplit("/", 1)[-1]})
            elif name.split("/")[0] == PACKAGE_DIR:
                _copy_member(archive, member, root / name, 0o644)
            elif _LICENCE_FILE.match(name):  # llama-cpp-python's own licence (MIT)
                _copy_member(
                    archive,
                    member,
                    root / LLAMA_LICENSES_DIR / f"llama-cpp-python-{name.rsplit('/', 1)[-1]}",
                    0o644,
                )
    if not (root / PACKAGE_DIR / "__init__.py").is_file():
        msg = f"{wheel} holds no {PACKAGE_DIR}/ package: it is not a llama-cpp-python wheel"
        raise BuildError(msg)
    return libraries


def stage_llama_layer(wheel: Path, root: Path, scratch: Path, patchelf: Patchelf) -> WheelInfo:
    """Lay out the llama-cuda layer of `wheel` under `root` (see the module docstring)."""
    info = read_wheel_info(wheel)
    scratch.mkdir(parents=True, exist_ok=True)
    libraries = _extract_package(wheel, root, scratch)
    loaded = _loaded_library_names(root / PACKAGE_DIR)
    sonames = {digest: patchelf.soname(library.scratch) for digest, library in libraries.items()}
    needed = {name for library in libraries.values() for name in patchelf.needed(library.scratch)}
    lib_dir = root / LIB_DIR
    lib_dir.mkdir(parents=True, exist_ok=True)
    placed: dict[str, str] = {}
    for digest, library in sorted(libraries.items(), key=lambda item: sorted(item[1].names)):
        real = sonames[digest] or min(library.names)
        links = sorted(name for name in library.names - {real} if name in loaded or name in needed)
        for name in (real, *links):
            if name in placed:
                msg = (
                    f"{wheel} holds two different libraries named {name} (from "
                    f"{placed[name]} and {', '.join(sorted(library.names))}): rebuild the wheel"
                )
                raise BuildError(msg)
            placed[name] = ", ".join(sorted(library.names))
        target = lib_dir / real
        shutil.move(library.scratch, target)
        patchelf.set_runpath(target, RUNPATH)
        for name in links:
            (lib_dir / name).symlink_to(real)
    add_to_layer(lib_dir, info.version)  # llama.cpp's memory fit, linked to this libllama
    (root / LLAMA_LICENSES_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LLAMA_CPP_LICENSE, root / LLAMA_LICENSES_DIR / LLAMA_CPP_LICENSE.name)
    return info


def external_needs(root: Path, patchelf: Patchelf) -> tuple[str, ...]:
    """DT_NEEDED names of the layer's libraries that neither the layer nor the system provide."""
    lib_dir = root / LIB_DIR
    present = {path.name for path in lib_dir.iterdir()}
    needed: set[str] = set()
    for path in sorted(lib_dir.iterdir()):
        if path.is_file() and not path.is_symlink() and is_elf(path):
            needed.update(patchelf.needed(path))
    return tuple(sorted(needed - present - SYSTEM_LIBRARIES))


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
            f"{name} (needed by {', '.join(sorted(needed_by[name])) or 'the llama-cuda layer'})"
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
