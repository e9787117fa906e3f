"""The llama-cpp-python wheel, compiled once from its pinned sdist and kept in a wheelhouse.

PyPI has only an sdist. The wheel is keyed by the sdist's sha256 and the CMake flags, so each
flavour compiles once per machine; the result is normalized so that every native library,
including the dynamically loaded ggml backends, sits in `llama_cpp/lib/`. The sdist is
downloaded and built without build isolation in a venv of the hash-locked `llama-build` lock,
so nothing unpinned is fetched while compiling.

Reproducible: the sdist is unpacked and built at fixed places under the compile's scratch
directory, and `-ffile-prefix-map` maps that directory to `/llamaship-build`, so two compiles
in different directories give the same bytes (`nox -s repro -- --compile` proves it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.locks import BUILD_ENV_LOCK, host_lock
from llamaship_build.toolchain import HOST, Toolchain

_log = logging.getLogger(__name__)

PACKAGE = "llama-cpp-python"
_NATIVE_SUFFIX = re.compile(r"\.(so(\.\d+)*|dll|dylib)$")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Flavour:
    """A named set of CMake flags for llama.cpp."""

    name: str
    cmake_args: tuple[str, ...]


# Portable: no -march=native; every x86-64 CPU level as its own backend library, chosen at
# run time (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS). LLAVA_BUILD=OFF: no multimodal library.
PORTABLE = Flavour(
    "portable",
    (
        "-DGGML_NATIVE=OFF",
        "-DGGML_BACKEND_DL=ON",
        "-DGGML_CPU_ALL_VARIANTS=ON",
        "-DLLAVA_BUILD=OFF",
    ),
)
# The benchmark's reference: tuned for the build machine's CPU only.
NATIVE = Flavour("native", ("-DGGML_NATIVE=ON", "-DLLAVA_BUILD=OFF"))
FLAVOURS = {flavour.name: flavour for flavour in (PORTABLE, NATIVE)}


@dataclass(frozen=True)
class Pin:
    """llama-cpp-python's version and sdist hashes, as written in a lock file.

    `build_lock` is the hash lock of the sdist's build environment (beside the lock read).
    """

    version: str
    sha256: tuple[str, ...]
    build_lock: Path | None = None

    @classmethod
    def from_lock(cls, lock: Path) -> Pin:
        text = lock.read_text()
        match = re.search(
            rf"^{PACKAGE}==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{{64}})+)", text, re.MULTILINE
        )
        if match is None:
            msg = f"{lock} has no hashed pin of {PACKAGE}: run `nox -s lock`"
            raise BuildError(msg)
        return cls(
            match.group(1),
            tuple(_HASH.findall(match.group(2))),
            lock.parent / f"{BUILD_ENV_LOCK}.txt",
        )

    def requirement_line(self) -> str:
        hashes = " ".join(f"--hash=sha256:{digest}" for digest in self.sha256)
        return f"{PACKAGE}=={self.version} {hashes}\n"


def pinned_version(requirements: Path) -> str:
    """llama-cpp-python's version as this machine's CPU lock pins it (the one place the build
    learns it: nothing else writes the version down)."""
    return Pin.from_lock(host_lock(requirements, "cpu")).version


# Bump when how a compile runs changes (not its flags): older wheels are not reused.
RECIPE = 2
# What the compile's scratch directory is called inside the binaries (`__FILE__` in asserts).
BUILD_PREFIX = "/llamaship-build"


def wheel_key(pin: Pin, flavour: Flavour, toolchain: Toolchain = HOST) -> str:
    """Cache key: sdist hashes, CMake flags, recipe, interpreter, machine and (if not the
    host's) the toolchain."""
    fields = {
        "recipe": RECIPE,
        "sdist_sha256": sorted(pin.sha256),
        "version": pin.version,
        "cmake_args": flavour.cmake_args,
        "machine": platform.machine(),
        "platform": sys.platform,
        "python": sys.implementation.cache_tag,
    }
    if toolchain.name != HOST.name:
        fields["toolchain"] = toolchain.name
    material = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _slot(pin: Pin, flavour: Flavour, wheelhouse: Path, toolchain: Toolchain) -> Path:
    return wheelhouse / f"{flavour.name}-{wheel_key(pin, flavour, toolchain)}"


def cached_wheel(
    pin: Pin, flavour: Flavour, wheelhouse: Path, toolchain: Toolchain = HOST
) -> Path | None:
    """The wheel already built for this pin, flavour and toolchain, if any."""
    existing = sorted(_slot(pin, flavour, wheelhouse, toolchain).glob("*.whl"))
    return existing[0] if existing else None


def ensure_wheel(pin: Pin, flavour: Flavour, wheelhouse: Path, toolchain: Toolchain = HOST) -> Path:
    """The normalized wheel for this pin and flavour, compiling it on a cache miss."""
    existing = cached_wheel(pin, flavour, wheelhouse, toolchain)
    if existing is not None:
        return existing
    slot = _slot(pin, flavour, wheelhouse, toolchain)
    _log.info(
        "compiling %s %s (%s, %s toolchain): this takes 10-25 minutes on 2 cores",
        PACKAGE,
        pin.version,
        flavour.name,
        toolchain.name,
    )
    with toolchain.scratch() as scratch:
        raw = _compile(pin, flavour, scratch, toolchain)
        staged = Path(scratch) / "normalized"
        staged.mkdir()
        normalized = normalize_wheel(raw, staged)
        slot.mkdir(parents=True, exist_ok=True)
        target = slot / normalized.name
        shutil.move(normalized, target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)
    return target


def build_env(pin: Pin, scratch: Path, toolchain: Toolchain) -> str:
    """A venv holding exactly the hash-locked build requirements of the sdist; its python."""
    if pin.build_lock is None or not pin.build_lock.is_file():
        msg = f"no hash lock of {PACKAGE}'s build environment ({pin.build_lock}): run `nox -s lock`"
        raise BuildError(msg)
    lock = scratch / "build-env.txt"
    shutil.copyfile(pin.build_lock, lock)
    venv = scratch / "build-env"
    python = toolchain.inside(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    what = f"preparing the build environment of {PACKAGE} from {pin.build_lock}"
    toolchain.run([toolchain.python, "-m", "venv", toolchain.inside(venv)], what=what)
    toolchain.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--require-hashes",
            "--no-deps",
            "-r",
            toolchain.inside(lock),
        ],
        what=what,
    )
    return python


def prefix_map_env(
    scratch: Path,
    toolchain: Toolchain,
    platform_name: str = sys.platform,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """Compiler flags naming the scratch directory `BUILD_PREFIX` in what they write (GCC and
    Clang; nvcc passes it to its host compiler). MSVC has no such flag: none on Windows.

    On the host they follow the caller's own CFLAGS/CXXFLAGS/CUDAFLAGS, and both the given and
    the resolved path are mapped (CMake sees the resolved one: /var is /private/var on macOS).
    """
    if toolchain.name != HOST.name:
        names, environ = [toolchain.inside(scratch)], {}
    elif platform_name == "win32":
        return {}
    else:
        names = list(dict.fromkeys((str(scratch), str(scratch.resolve()))))
    flags = [f"-ffile-prefix-map={name}={BUILD_PREFIX}" for name in names]
    cuda = [f"-Xcompiler={flag}" for flag in flags]
    return {
        variable: " ".join([*filter(None, [environ.get(variable, "").strip()]), *added])
        for variable, added in (("CFLAGS", flags), ("CXXFLAGS", flags), ("CUDAFLAGS", cuda))
    }


def download_sdist(pin: Pin, scratch: Path, toolchain: Toolchain, python: str) -> Path:
    """The pinned sdist in `scratch/sdist`, downloaded with its hashes checked by the build
    environment's pip (`python`), whose metadata step uses the locked backend, not a fetched one."""
    requirement = scratch / "requirement.txt"
    requirement.write_text(pin.requirement_line())
    out = scratch / "sdist"
    toolchain.run(
        [
            python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-binary",
            PACKAGE,
            "--require-hashes",
            "-r",
            toolchain.inside(requirement),
            "-d",
            toolchain.inside(out),
        ],
        what=f"downloading the {PACKAGE} {pin.version} sdist (check the network or pip's index)",
    )
    found = sorted(out.glob("*.tar.gz"))
    if not found:
        msg = f"downloading the {PACKAGE} {pin.version} sdist left nothing in {out}"
        raise BuildError(msg)
    return found[0]


def is_vocabulary(name: str) -> bool:
    """Whether an sdist member is one of llama.cpp's test vocabularies (75 MB, never built)."""
    return "/vendor/llama.cpp/models/" in name and name.endswith(".gguf")


def unpack_sdist(sdist: Path, target: Path) -> Path:
    """The sdist's source tree (without the test vocabularies), unpacked under `target`."""
    with tarfile.open(sdist) as archive:
        members = [member for member in archive.getmembers() if not is_vocabulary(member.name)]
        archive.extractall(target, members=members, filter="data")
    trees = sorted(path for path in target.iterdir() if (path / "pyproject.toml").is_file())
    if len(trees) != 1:
        msg = f"{sdist.name} does not hold one source tree with a pyproject.toml"
        raise BuildError(msg)
    return trees[0]


def _compile(pin: Pin, flavour: Flavour, scratch: Path, toolchain: Toolchain) -> Path:
    python = build_env(pin, scratch, toolchain)
    source = unpack_sdist(download_sdist(pin, scratch, toolchain, python), scratch / "src")
    out = scratch / "raw"
    # scikit-build-core splits CMAKE_ARGS with shlex: quote paths that hold spaces.
    # CMAKE_BUILD_RPATH_USE_ORIGIN: libraries linked with a build RPATH (the CPU variants, which
    # the install step then clears) would otherwise carry the scratch path in their build ID.
    env = {
        "CMAKE_ARGS": shlex.join((*flavour.cmake_args, "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON")),
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
        **prefix_map_env(scratch, toolchain),
    }
    # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and would hand back another flavour.
    # A local tree is built in place; the CMake build directory is a fixed one beside it.
    # --verbose: CMake's [n/N] lines stream, so the 10-25 minutes show progress.
    command = [
        python,
        "-m",
        "pip",
        "wheel",
        "--verbose",
        "--no-deps",
        "--no-cache-dir",
        "--no-build-isolation",
        "--config-settings",
        f"build-dir={toolchain.inside(scratch / 'build')}",
        toolchain.inside(source),
        "-w",
        toolchain.inside(out),
    ]
    toolchain.run(
        command,
        env=env,
        what=(
            f"compiling {PACKAGE} {pin.version} ({flavour.name}); it needs a C/C++ compiler and "
            "CMake >= 3.21"
        ),
    )
    wheels = sorted(out.glob("*.whl"))
    if not wheels:
        msg = f"compiling {PACKAGE} {pin.version} ({flavour.name}) left no wheel in {out}"
        raise BuildError(msg)
    return wheels[0]


def normalize_wheel(wheel: Path, out_dir: Path) -> Path:
    """Rewrite a llama-cpp-python wheel so `llama_cpp/lib/` holds every native library.

    The raw wheel puts the ggml backends in a top-level `bin/` and second copies of all
    libraries in top-level `lib/` and `include/`; those would land loose in site-packages.
    A CUDA build has `libggml-cuda.so` in both `bin/` and `llama_cpp/lib/`: stored once.
    Every member gets one fixed date and mode 0644 or 0755, so the bytes depend only on the
    contents (the backend stamps files with their build times).
    """
    target = out_dir / wheel.name
    records: list[str] = []
    written: dict[str, bytes] = {}  # name -> sha256 of what was stored
    with (
        zipfile.ZipFile(wheel) as source,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as sink,
    ):
        dist_info = next(
            name.split("/")[0]
            for name in source.namelist()
            if name.split("/")[0].endswith(".dist-info")
        )
        for info in sorted(source.infolist(), key=lambda item: item.filename):
            name = _normalized_name(info.filename, dist_info)
            if name is None:
                continue
            data = source.read(info)
            digest = hashlib.sha256(data).digest()
            if name in written:
                if written[name] != digest:
                    msg = (
                        f"{wheel.name} holds two different {name.rsplit('/', 1)[-1]} "
                        "(bin/ and llama_cpp/lib/): rebuild it from a clean build tree"
                    )
                    raise BuildError(msg)
                continue
            written[name] = digest
            executable = (info.external_attr >> 16) & 0o111
            sink.writestr(_member(name, 0o755 if executable else 0o644), data)
            records.append(_record_line(name, data))
        record_name = f"{dist_info}/RECORD"
        records.append(f"{record_name},,")
        sink.writestr(_member(record_name, 0o644), "\n".join(records) + "\n")
    return target


def _member(name: str, mode: int) -> zipfile.ZipInfo:
    """A zip member with the wheel's fixed date (zip's earliest) and a regular-file `mode`."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _normalized_name(name: str, dist_info: str) -> str | None:
    top = name.split("/")[0]
    if name == f"{dist_info}/RECORD" or name.endswith("/"):
        return None
    if top in ("llama_cpp", dist_info):
        return name
    if top == "bin" and _NATIVE_SUFFIX.search(name):
        return f"llama_cpp/lib/{name.split('/')[-1]}"
    return None


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"
