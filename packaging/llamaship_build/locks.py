"""Compile and check the layered, per-OS, hash-locked requirements.

The resolver is uv (`uv pip compile`), not pip-tools: pip-tools resolves for the interpreter
that runs it only, while uv resolves for a named platform and Python version
(`--python-platform`, `--python-version`), so this one machine writes the Linux, Windows and
macOS locks with one resolver and one code path. The Linux locks target manylinux_2_28, below
the bundle's glibc floor, whatever glibc the machine that locks has.

Layout: `requirements/NAME.in` is shared by every OS; the Linux locks are
`requirements/NAME.txt` (what nox installs on Linux and what the build reads), the others are
`requirements/TARGET/NAME.txt`. A layer is constrained (`-c`) by its target's own earlier locks.

This module imports only the standard library (and the build side's errors), so `nox -s lock`
runs from a venv holding nothing but the tools lock.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError, StaleLockError

COMPILE_COMMAND = "nox -s lock"
PYTHON_VERSION = "3.11"
# Layer -> the layers it is constrained by (-c); compile order follows this dict.
LAYERS: dict[str, tuple[str, ...]] = {
    "base": (),
    "build": ("base",),
    "cpu": ("base",),
    "gpu": ("base",),
    # The CUDA compiler from NVIDIA's wheels (build-only), the CUDA version gpu.txt ships.
    "cuda-toolkit": ("base", "gpu"),
    "dev": ("base", "build"),
    "tools": ("base",),
    # The release's signing steps: the signing library and what the CLI imports, nothing else.
    "signing": ("base",),
    # The build environment of the llama-cpp-python sdist (scikit-build-core and its deps):
    # a venv of its own, so it is constrained by nothing.
    "llama-build": (),
}
LOCK_NAMES = tuple(LAYERS)
BUILD_ENV_LOCK = "llama-build"
_DIGEST_PREFIX = "# llamaship-inputs-sha256: "
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


@dataclass(frozen=True)
class Target:
    """An OS and machine the locks are resolved for."""

    name: str
    uv_platform: str  # uv's --python-platform
    pip_platforms: tuple[str, ...]  # pip download --platform: every tag the target accepts
    sys_platform: str
    machines: frozenset[str]  # platform.machine() values of this target, lower case
    directory: str  # below requirements/; "" for the Linux locks
    layers: tuple[str, ...]

    def lock(self, requirements: Path, name: str) -> Path:
        return requirements / self.directory / f"{name}.txt"

    def header(self) -> str:
        return (
            f"# target: {self.name}, resolved by uv pip compile --python-platform "
            f"{self.uv_platform} --python-version {PYTHON_VERSION}\n"
            "# (uv, because pip-tools resolves only for the interpreter it runs on)\n"
        )


# The CUDA overlay (gpu) and its compiler are built for Linux only.
_DESKTOP_LAYERS = tuple(name for name in LOCK_NAMES if name not in ("gpu", "cuda-toolkit"))
# pip does not widen a manylinux_2_28 tag to the older glibc versions it includes: list them.
_MANYLINUX_2_28 = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
TARGETS = {
    target.name: target
    for target in (
        Target(
            "linux-x86_64",
            "x86_64-manylinux_2_28",
            _MANYLINUX_2_28,
            "linux",
            frozenset({"x86_64", "amd64"}),
            "",
            LOCK_NAMES,
        ),
        Target(
            "windows-amd64",
            "x86_64-pc-windows-msvc",
            ("win_amd64",),
            "win32",
            frozenset({"amd64", "x86_64"}),
            "windows-amd64",
            _DESKTOP_LAYERS,
        ),
        # pip widens a macOS tag to the older versions (macOS 14: GitHub's arm64 runners).
        Target(
            "macos-arm64",
            "aarch64-apple-darwin",
            ("macosx_14_0_arm64",),
            "darwin",
            frozenset({"arm64", "aarch64"}),
            "macos-arm64",
            _DESKTOP_LAYERS,
        ),
    )
}


def host_target(sys_platform: str = sys.platform, machine: str = platform.machine()) -> Target:
    """The target whose locks this machine installs."""
    for target in TARGETS.values():
        if target.sys_platform == sys_platform and machine.lower() in target.machines:
            return target
    msg = (
        f"no requirement locks for {sys_platform} {machine}: locks exist for "
        f"{', '.join(TARGETS)}; add a Target to llamaship_build/locks.py and run "
        f"`{COMPILE_COMMAND}`"
    )
    raise BuildError(msg)


def host_lock(requirements: Path, name: str) -> Path:
    """This machine's lock of one layer (on Linux: requirements/NAME.txt)."""
    return host_target().lock(requirements, name)


def inputs_digest(requirements: Path, target: Target, name: str) -> str:
    """sha256 over the `.in` file, the target and the locks that constrain this layer."""
    digest = hashlib.sha256()
    digest.update((requirements / f"{name}.in").read_bytes())
    digest.update(target.header().encode())
    for constraint in LAYERS[name]:
        digest.update(target.lock(requirements, constraint).read_bytes())
    return digest.hexdigest()


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(_DIGEST_PREFIX):
            return line.removeprefix(_DIGEST_PREFIX).strip()
    return None


def pins(lock: Path) -> dict[str, str]:
    """Package name (normalized) -> pinned version of a lock file."""
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in _PIN.findall(lock.read_text())
    }


def compile_lock(requirements: Path, target: Target, name: str, upgrade: bool = False) -> None:
    """Resolve one layer for one target with uv and record the digest of its inputs."""
    lock = target.lock(requirements, name)
    lock.parent.mkdir(parents=True, exist_ok=True)
    source = os.path.relpath(requirements / f"{name}.in", lock.parent)
    command = [
        sys.executable,
        "-m",
        "uv",
        "pip",
        "compile",
        "--quiet",
        "--no-config",
        "--generate-hashes",
        "--python-platform",
        target.uv_platform,
        "--python-version",
        PYTHON_VERSION,
        "--custom-compile-command",
        COMPILE_COMMAND,
        # Names relative to the lock's folder, so no absolute path of this checkout is recorded.
        "--output-file",
        lock.name,
        source,
    ]
    for constraint in LAYERS[name]:
        command += ["--constraint", f"{constraint}.txt"]
    if upgrade:
        command.append("--upgrade")
    result = subprocess.run(command, cwd=lock.parent, check=False)
    if result.returncode != 0:
        msg = (
            f"uv pip compile failed for {name}.in on {target.name} (exit "
            f"{result.returncode}); see above"
        )
        raise BuildError(msg)
    lines = lock.read_text().splitlines(keepends=True)
    # Keep uv's header (it names the command) first; the target and digest lines follow it.
    header_end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    digest_line = f"{_DIGEST_PREFIX}{inputs_digest(requirements, target, name)}\n"
    lock.write_text(
        "".join([*lines[:header_end], target.header(), digest_line, *lines[header_end:]])
    )


def compile_all(requirements: Path, upgrade: bool = False) -> None:
    for target in TARGETS.values():
        for name in target.layers:
            compile_lock(requirements, target, name, upgrade=upgrade)


def check_all(requirements: Path) -> list[str]:
    """Every problem with every target's locks: stale or missing, base pins not shared."""
    problems: list[str] = []
    for target in TARGETS.values():
        stale = []
        for name in target.layers:
            lock = target.lock(requirements, name)
            if not lock.is_file():
                stale.append(f"{lock} is missing: run `{COMPILE_COMMAND}`")
            elif recorded_digest(lock) != inputs_digest(requirements, target, name):
                stale.append(
                    f"{lock} is stale: {name}.in or a lock it uses changed since it was "
                    f"compiled; run `{COMPILE_COMMAND}`"
                )
        problems += stale or _layering_problems(requirements, target)
    return problems


def _layering_problems(requirements: Path, target: Target) -> list[str]:
    base = pins(target.lock(requirements, "base"))
    problems = []
    for name in target.layers:
        if "base" not in LAYERS[name]:
            continue
        for package, version in pins(target.lock(requirements, name)).items():
            if package in base and base[package] != version:
                problems.append(
                    f"{target.lock(requirements, name)} pins {package}=={version} "
                    f"but its base.txt pins {base[package]}: run `{COMPILE_COMMAND}`"
                )
    llama = {
        name: pins(target.lock(requirements, name)).get("llama-cpp-python")
        for name in ("cpu", "gpu")
        if name in target.layers
    }
    if len(set(llama.values())) > 1:
        problems.append(
            f"{target.name}: cpu.txt and gpu.txt pin different llama-cpp-python "
            "versions: pin the same version in cpu.in and gpu.in and run "
            f"`{COMPILE_COMMAND}`"
        )
    return problems


def ensure_fresh(requirements: Path) -> None:
    problems = check_all(requirements)
    if problems:
        raise StaleLockError("; ".join(problems))


def without_package(lock: Path, package: str) -> str:
    """The lock's text minus one package's entry (it is installed from our own wheel)."""
    kept: list[str] = []
    skipping = False
    for line in lock.read_text().splitlines(keepends=True):
        if not line.startswith((" ", "\t", "#")) and line.strip():
            skipping = line.lower().startswith(f"{package}==")
        if not skipping:
            kept.append(line)
    return "".join(kept)
