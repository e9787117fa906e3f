"""Compile and check the layered, hash-locked requirements (pip-tools)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError, StaleLockError

# Compile order: a lock comes after every lock it is constrained by.
LOCK_NAMES = ("base", "build", "cpu", "gpu", "dev", "tools")
COMPILE_COMMAND = "nox -s lock"
_DIGEST_PREFIX = "# llamaship-inputs-sha256: "
_INCLUDE = re.compile(r"^\s*-[cr]\s+(\S+)", re.MULTILINE)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


@dataclass(frozen=True)
class LockPair:
    """One `.in` file and the lock compiled from it."""

    source: Path
    lock: Path

    @classmethod
    def named(cls, requirements: Path, name: str) -> LockPair:
        return cls(requirements / f"{name}.in", requirements / f"{name}.txt")


def inputs_digest(source: Path) -> str:
    """sha256 over the `.in` file and every file it includes with -c/-r."""
    digest = hashlib.sha256()
    text = source.read_bytes()
    digest.update(text)
    for included in _INCLUDE.findall(text.decode()):
        digest.update((source.parent / included).read_bytes())
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


def compile_lock(pair: LockPair, upgrade: bool = False) -> None:
    """Run pip-compile for one `.in` file and record the digest of its inputs."""
    command = [
        sys.executable, "-m", "piptools", "compile", "--quiet", "--generate-hashes",
        "--allow-unsafe", "--strip-extras", "--no-emit-index-url", "--no-emit-find-links",
        # Names relative to requirements/, so no absolute path of this checkout is recorded.
        "--no-emit-trusted-host", "--output-file", pair.lock.name, pair.source.name,
    ]
    if upgrade:
        command.append("--upgrade")
    env = {**os.environ, "CUSTOM_COMPILE_COMMAND": COMPILE_COMMAND}
    result = subprocess.run(command, cwd=pair.source.parent, env=env, check=False)
    if result.returncode != 0:
        msg = f"pip-compile failed for {pair.source.name} (exit {result.returncode}); see above"
        raise BuildError(msg)
    lines = pair.lock.read_text().splitlines(keepends=True)
    # Keep pip-compile's header first; the digest line follows it.
    header_end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    digest_line = f"{_DIGEST_PREFIX}{inputs_digest(pair.source)}\n"
    pair.lock.write_text("".join([*lines[:header_end], digest_line, *lines[header_end:]]))


def compile_all(requirements: Path, upgrade: bool = False) -> None:
    for name in LOCK_NAMES:
        compile_lock(LockPair.named(requirements, name), upgrade=upgrade)


def check_all(requirements: Path) -> list[str]:
    """Every problem with the locks: stale or missing locks, base pins not shared."""
    problems = []
    for name in LOCK_NAMES:
        pair = LockPair.named(requirements, name)
        if not pair.lock.is_file():
            problems.append(f"{pair.lock} is missing: run `{COMPILE_COMMAND}`")
        elif recorded_digest(pair.lock) != inputs_digest(pair.source):
            problems.append(
                f"{pair.lock} is stale: {pair.source.name} or a lock it uses changed since it "
                f"was compiled; run `{COMPILE_COMMAND}`"
            )
    if not problems:
        problems.extend(_layering_problems(requirements))
    return problems


def _layering_problems(requirements: Path) -> list[str]:
    base = pins(requirements / "base.txt")
    problems = []
    for name in ("cpu", "gpu", "build", "dev"):
        for package, version in pins(requirements / f"{name}.txt").items():
            if package in base and base[package] != version:
                problems.append(f"{name}.txt pins {package}=={version} but base.txt pins "
                                f"{base[package]}: run `{COMPILE_COMMAND}`")
    cpu, gpu = pins(requirements / "cpu.txt"), pins(requirements / "gpu.txt")
    if cpu.get("llama-cpp-python") != gpu.get("llama-cpp-python"):
        problems.append("cpu.txt and gpu.txt pin different llama-cpp-python versions: pin the "
                        "same version in cpu.in and gpu.in and run `nox -s lock`")
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
