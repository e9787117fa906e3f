"""`python -m llamaship_build.lock_download [--target NAME]`: prove each OS's locks install.

For every target, each set of locks that is installed together is fetched with
`pip download --require-hashes --only-binary :all: --platform TAG`: pip refuses a lock that
misses a dependency of that platform or a hash, or that pins a version without a wheel for it.
Needs the package index; like `lock`, it imports only the standard library and `locks`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from llamaship_build import locks
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import PACKAGE as LLAMA_PACKAGE
from llamaship_build.project import Project

# Locks installed into one venv together (nox sessions, the bundle and the sdist build venvs).
INSTALL_SETS: dict[str, tuple[str, ...]] = {
    "tests": ("base", "build", "dev"),
    "bundle": ("base", "build", "cpu"),
    "overlay": ("gpu",),
    "tools": ("tools",),
    "signing": ("signing",),
    "llama-build": ("llama-build",),
}


def download_command(
    requirements: Path, target: locks.Target, layers: Sequence[str], scratch: Path, dest: Path
) -> list[str]:
    """The pip download command for one install set."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--require-hashes",
        "--only-binary",
        ":all:",
        *(arg for tag in target.pip_platforms for arg in ("--platform", tag)),
        "--python-version",
        locks.PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        f"cp{locks.PYTHON_VERSION.replace('.', '')}",
        "--abi",
        "abi3",
        "--abi",
        "none",
        "--dest",
        str(dest),
    ]
    for name in layers:
        # llama-cpp-python is an sdist only: the build compiles it into our own wheel.
        copy = scratch / f"{target.name}-{name}.txt"
        copy.write_text(locks.without_package(target.lock(requirements, name), LLAMA_PACKAGE))
        command += ["-r", str(copy)]
    return command


def check(requirements: Path, targets: Sequence[locks.Target]) -> list[str]:
    """Download every install set of every target; the failures, one line each."""
    failures = []
    for target in targets:
        for set_name, layers in INSTALL_SETS.items():
            if not set(layers) <= set(target.layers):
                continue
            with tempfile.TemporaryDirectory(prefix="lock-download-") as scratch:
                command = download_command(
                    requirements, target, layers, Path(scratch), Path(scratch) / "wheels"
                )
                result = subprocess.run(command, check=False)
            if result.returncode != 0:
                failures.append(
                    f"{target.name} {set_name} ({', '.join(layers)}): pip download "
                    f"--require-hashes failed (exit {result.returncode}); see above"
                )
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llamaship_build.lock_download",
        description="download each OS's locks for its platform",
    )
    parser.add_argument(
        "--target",
        choices=sorted(locks.TARGETS),
        action="append",
        help="only this target (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    targets = [locks.TARGETS[name] for name in args.target or locks.TARGETS]
    try:
        failures = check(Project.here().requirements, targets)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    for failure in failures:
        print(f"lock does not install: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
