"""llama.cpp's own memory fit, `llama-fit-params`, built once per pin and shipped in every build.

llama-cpp-python does not bind the fit (its bindings dropped `llama_params_fit` in 0.3.21), so
the tool is compiled from the pinned sdist's vendored tree with the portable build's flags and
shipped beside the bundle's llama_cpp libraries: the executable, its small impl library and
libllama-common, stripped, with RUNPATH `$ORIGIN`. It links against the libllama and libggml
already there, never a second copy (`check_abi`). With GGML_BACKEND_DL it is host code: on a
GPU overlay it is the same tool, loading the overlay's backend module named by
`GGML_BACKEND_PATH` in its environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import (
    PACKAGE,
    PORTABLE,
    RECIPE,
    Pin,
    build_env,
    download_sdist,
    is_vocabulary,
    prefix_map_env,
)
from llamaship_build.settings import BuildSettings
from llamaship_build.toolchain import HOST, Toolchain, configured_name, default_toolchain

_log = logging.getLogger(__name__)

TOOL = "llama-fit-params"
# Only the fit tool's own files ship; libllama/libggml are the build's own.
SHIPPED = re.compile(
    r"^(llama-fit-params|libllama-common\.so\.\d+|"
    r"libllama-fit-params-impl\.so)$"
)
# What the bundle collects from llama_cpp/lib per platform: the tool's files, and libllama under
# the soname libllama-common links against (the bundle keeps libllama.so for llama_cpp; the
# duplicate becomes a link). Only Linux builds the tool so far.
BUNDLE_FILES = {
    "linux": (
        "llama-fit-params",
        "libllama-fit-params-impl.so",
        "libllama-common.so.0",
        "libllama.so.0",
    )
}
# The portable build's flags but one CPU backend: libllama and libggml do not depend on which
# CPU variants exist (they are loaded at run time), and the variants would add ~15 minutes.
# `check_abi` checks the tool against the libraries it ships beside.
TOOL_CMAKE_ARGS = (
    *(
        arg
        for arg in PORTABLE.cmake_args
        if not arg.startswith(("-DLLAVA_", "-DGGML_CPU_ALL_VARIANTS"))
    ),
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    # No HTTPS in libllama-common: the tool downloads nothing, and libssl would be a new need.
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_OPENSSL=OFF",
    # Found beside the libraries it ships with, wherever they are installed.
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN",
)
# Undefined symbols these libraries provide are the system's (versioned ones are skipped too).
_SYSTEM = frozenset(
    {
        "libc.so.6",
        "libm.so.6",
        "libstdc++.so.6",
        "libgcc_s.so.1",
        "libgomp.so.1",
        "ld-linux-x86-64.so.2",
        "libpthread.so.0",
        "libdl.so.2",
    }
)
_DYNAMIC = re.compile(r"\((NEEDED|SONAME|RUNPATH|RPATH)\)\s+[^\[]*\[([^\]]*)\]")


@dataclass(frozen=True)
class FitTool:
    """A built fit tool: the directory holding exactly the files to ship."""

    directory: Path

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(sorted(path for path in self.directory.iterdir() if SHIPPED.match(path.name)))

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.files)


def tool_key(pin: Pin, toolchain_name: str) -> str:
    """Cache key: sdist hashes, CMake flags, recipe, machine and toolchain (as wheels are
    keyed)."""
    fields = {
        "recipe": RECIPE,
        "sdist_sha256": sorted(pin.sha256),
        "version": pin.version,
        "cmake_args": TOOL_CMAKE_ARGS,
        "machine": platform.machine(),
        "platform": sys.platform,
    }
    if toolchain_name != HOST.name:
        fields["toolchain"] = toolchain_name
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def cached_tool(pin: Pin, cache: Path, toolchain_name: str | None = None) -> FitTool | None:
    """The tool already built for this pin by the configured toolchain (or the named one)."""
    name = toolchain_name or configured_name(BuildSettings.resolve(os.environ))
    slot = cache / f"{TOOL}-{tool_key(pin, name)}"
    return FitTool(slot) if (slot / TOOL).is_file() else None


def ensure_fit_tool(pin: Pin, cache: Path, toolchain: Toolchain | None = None) -> FitTool:
    """The fit tool for this pin, compiled on a cache miss by `toolchain` (default: the
    configured one, the Debian 11 root on Linux), about 6 minutes on 2 cores. Concurrent
    callers wait for one compile."""
    from filelock import FileLock

    chosen = toolchain or default_toolchain()
    existing = cached_tool(pin, cache, chosen.name)
    if existing is not None:
        return existing
    slot = cache / f"{TOOL}-{tool_key(pin, chosen.name)}"
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(slot.with_name(slot.name + ".lock")):
        existing = cached_tool(pin, cache, chosen.name)  # built while this caller waited
        if existing is not None:
            return existing
        _log.info(
            "compiling %s from %s %s with the portable build's flags (%s toolchain): "
            "about 6 minutes on 2 cores",
            TOOL,
            PACKAGE,
            pin.version,
            chosen.name,
        )
        with chosen.scratch() as scratch:
            python = build_env(pin, scratch, chosen)
            sdist = download_sdist(pin, scratch, chosen, python)
            source = vendored_tree(sdist, scratch / "src")
            cmake = str(Path(python).with_name("cmake"))
            built = compile_tool(source, scratch / "build", chosen, cmake, scratch)
            staged = scratch / "out"
            collect(built, staged)
            shutil.rmtree(slot, ignore_errors=True)  # a slot without the tool is incomplete
            shutil.copytree(staged, slot.with_name(slot.name + ".partial"), dirs_exist_ok=True)
            os.replace(slot.with_name(slot.name + ".partial"), slot)
    return FitTool(slot)


def vendored_tree(sdist: Path, target: Path) -> Path:
    """Extract the sdist's `vendor/llama.cpp` (without its 75 MB of vocabulary GGUFs)."""
    with tarfile.open(sdist) as archive:
        members = [
            member
            for member in archive.getmembers()
            if "/vendor/llama.cpp/" in member.name and not is_vocabulary(member.name)
        ]
        if not members:
            msg = f"{sdist.name} has no vendor/llama.cpp tree: not a {PACKAGE} sdist"
            raise BuildError(msg)
        archive.extractall(target, members=members, filter="data")
    return next(target.glob("*/vendor/llama.cpp"))


def compile_tool(
    source: Path, build: Path, toolchain: Toolchain, cmake: str, scratch: Path
) -> Path:
    """Configure and build the `llama-fit-params` target with `cmake` (as `toolchain` names
    it; output streams, so the compile shows progress); the directory of its outputs.
    `scratch` (holding `source` and `build`) is mapped to a fixed name in the binaries."""
    toolchain.run(
        [cmake, "-S", toolchain.inside(source), "-B", toolchain.inside(build), *TOOL_CMAKE_ARGS],
        what=f"configuring {TOOL} (it needs a C/C++ compiler)",
        env=prefix_map_env(scratch, toolchain),
    )
    toolchain.run(
        [
            cmake,
            "--build",
            toolchain.inside(build),
            "--target",
            TOOL,
            "--parallel",
            str(os.cpu_count() or 1),
        ],
        what=f"compiling {TOOL}",
    )
    return build / "bin"


def dynamic_entries(path: Path) -> dict[str, list[str]]:
    """NEEDED, SONAME and RUNPATH of an ELF file, read with binutils' readelf."""
    result = subprocess.run(
        ["readelf", "-d", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        msg = f"readelf cannot read {path}: {result.stderr.strip()} (install binutils)"
        raise BuildError(msg)
    entries: dict[str, list[str]] = {}
    for kind, value in _DYNAMIC.findall(result.stdout):
        entries.setdefault(kind, []).append(value)
    return entries


def collect(built: Path, out: Path) -> None:
    """Copy the shipped files (libraries under their SONAME), stripped, into `out`."""
    out.mkdir(parents=True)
    names = [
        TOOL,
        *sorted(
            path.name
            for path in built.iterdir()
            if path.name.startswith(("libllama-common.so", "libllama-fit-params"))
        ),
    ]
    strip = shutil.which("strip")
    for name in names:
        source = (built / name).resolve()
        target_name = (dynamic_entries(source).get("SONAME") or [name])[0]
        target = out / target_name
        if target.exists():
            continue
        shutil.copyfile(source, target)
        if strip is not None:
            subprocess.run([strip, "--strip-unneeded", str(target)], check=True)
        target.chmod(0o755 if name == TOOL else 0o644)
        if dynamic_entries(target).get("RUNPATH") != ["$ORIGIN"]:
            msg = f"{target_name} was built without RUNPATH $ORIGIN: check TOOL_CMAKE_ARGS"
            raise BuildError(msg)
    shipped = sorted(path.name for path in out.iterdir())
    if not all(SHIPPED.match(name) for name in shipped) or TOOL not in shipped:
        msg = f"the {TOOL} build produced unexpected files: {shipped}"
        raise BuildError(msg)


def _symbols(path: Path, defined: bool) -> set[str]:
    option = "--defined-only" if defined else "--undefined-only"
    result = subprocess.run(
        ["nm", "-D", option, str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        msg = f"nm cannot read {path}: {result.stderr.strip()} (install binutils)"
        raise BuildError(msg)
    symbols = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        kind, name = parts[-2], parts[-1]
        if "@" in name or (not defined and kind in "wv"):
            continue  # versioned symbols are the system's; weak ones may stay unresolved
        symbols.add(name)
    return symbols


def check_abi(tool: FitTool, lib_dir: Path) -> None:
    """Refuse to ship the tool beside `lib_dir` unless every library and symbol it needs is there.

    Each DT_NEEDED name must be a shipped file, a file in `lib_dir` or a system library, and
    every unversioned symbol the tool's files import must be defined by those libraries.
    """
    own = {path.name for path in tool.files}
    problems: list[str] = []
    needed: set[str] = set()
    for path in tool.files:
        needed.update(dynamic_entries(path).get("NEEDED", []))
    for name in sorted(needed - own - _SYSTEM):
        if not (lib_dir / name).exists():
            problems.append(f"{name} (needed by {TOOL}) is not in {lib_dir}")
    provided: set[str] = set()
    for name in sorted(needed - _SYSTEM):
        where = tool.directory / name if name in own else lib_dir / name
        if where.exists():
            provided |= _symbols(where, defined=True)
    missing = sorted(
        set().union(*(_symbols(path, defined=False) for path in tool.files)) - provided
    )
    if missing:
        problems.append(
            f"{len(missing)} symbols are not defined by the libraries in {lib_dir}: "
            f"{', '.join(missing[:5])}"
        )
    if problems:
        msg = (
            f"{TOOL} does not match the llama.cpp libraries in {lib_dir} (built from "
            f"another llama.cpp?): {'; '.join(problems)}. Rebuild both from the same pin."
        )
        raise BuildError(msg)


def install_fit_tool(tool: FitTool, lib_dir: Path) -> list[Path]:
    """Check the tool against `lib_dir`'s libraries, then copy its files in; the paths written."""
    check_abi(tool, lib_dir)
    written = []
    for path in tool.files:
        target = lib_dir / path.name
        shutil.copyfile(path, target)
        target.chmod(0o755 if path.name == TOOL else 0o644)
        written.append(target)
    return written
