"""Where the Linux build's native steps run: a Debian 11 root (glibc 2.31) or this machine.

A bundle needs the glibc of the system it was linked on, or newer: what PyInstaller copies
(libpython, libstdc++, libgcc_s) and what llama.cpp is compiled against decide the floor. So the
Linux wheel compile and the PyInstaller run happen inside a Debian 11 (bullseye) root made with
debootstrap, with clang-16 from bullseye (its GCC 10 lacks the AMX/AVX-VNNI flags two CPU
variants need) and a shared CPython 3.11 built from Debian's own python3.11 source. The result
runs on glibc >= 2.31: Debian 11, Ubuntu 20.04, RHEL 9 and newer. `docs/platforms.md` weighs
this against the alternatives.

`Toolchain` is the small interface the wheel and bundle builds use; `HOST` runs on this
machine (Windows, macOS, and Linux with `LLAMASHIP_BUILD_LINUX_TOOLCHAIN=host`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llamaship_build.errors import BuildError
from llamaship_build.project import cache_dir
from llamaship_build.settings import BuildSettings

_log = logging.getLogger(__name__)


class Toolchain(Protocol):
    """Runs the native build steps; paths inside commands are as the toolchain sees them."""

    @property
    def name(self) -> str:
        """Names the toolchain in logs and cache keys."""
        ...

    @property
    def python(self) -> str:
        """The toolchain's Python interpreter, as its commands name it."""
        ...

    def run(
        self,
        command: Sequence[str],
        *,
        what: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Run `command`, streaming its output; raise BuildError naming `what` on failure."""
        ...

    def output(self, command: Sequence[str]) -> str:
        """Run `command` and return its standard output (stripped)."""
        ...

    def scratch(self) -> contextlib.AbstractContextManager[Path]:
        """A temporary directory both this process and the toolchain's commands can use."""
        ...

    def inside(self, host_path: Path) -> str:
        """How the toolchain's commands name `host_path` (a scratch path or a bind)."""
        ...

    def cache(self) -> Path:
        """Where build venvs live: a host path the toolchain's commands can also use."""
        ...

    def outside(self, inside: str) -> Path:
        """The host path of a path the toolchain's commands printed (the inverse of inside)."""
        ...


def check_exit(
    result: subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes], what: str
) -> None:
    """BuildError naming `what` unless `result` exited 0."""
    if result.returncode != 0:
        msg = f"{what} failed (exit {result.returncode}); see the output above"
        raise BuildError(msg)


@dataclass(frozen=True)
class HostToolchain:
    """This machine's compilers and Python."""

    name: str = "host"
    python: str = sys.executable

    def run(
        self,
        command: Sequence[str],
        *,
        what: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        _log.info("%s: %s", what, " ".join(command))
        check_exit(
            subprocess.run(list(command), env={**os.environ, **(env or {})}, cwd=cwd, check=False),
            what,
        )

    def output(self, command: Sequence[str]) -> str:
        return subprocess.run(
            list(command), capture_output=True, text=True, check=True
        ).stdout.strip()

    def scratch(self) -> contextlib.AbstractContextManager[Path]:
        return temporary_dir(None)

    def inside(self, host_path: Path) -> str:
        return str(host_path)

    def cache(self) -> Path:
        return cache_dir()

    def outside(self, inside: str) -> Path:
        return Path(inside)


@contextlib.contextmanager
def temporary_dir(parent: Path | None) -> Iterator[Path]:
    """A new directory under `parent` (default: the system's), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="llamaship-", dir=parent) as name:
        yield Path(name)


HOST = HostToolchain()


def configured_name(settings: BuildSettings) -> str:
    """The name of the toolchain `select_toolchain` would pick, without creating anything."""
    from llamaship_build.debian_root import DEBIAN_NAME

    return (
        HOST.name if sys.platform != "linux" or settings.linux_toolchain == "host" else DEBIAN_NAME
    )


def default_toolchain(binds: Sequence[Path] = ()) -> Toolchain:
    """The toolchain the environment's build settings choose (see `select_toolchain`)."""
    return select_toolchain(BuildSettings.resolve(os.environ), cache_dir(), binds)


def select_toolchain(settings: BuildSettings, cache: Path, binds: Sequence[Path] = ()) -> Toolchain:
    """The toolchain for this machine: the Debian 11 root on Linux unless `host` is asked for.

    `binds` are directories the root's commands must see at the same path (the checkout).
    """
    if sys.platform != "linux" or settings.linux_toolchain == "host":
        return HOST
    from llamaship_build.debian_root_create import ensure_debian_root

    return ensure_debian_root(cache).with_binds(*binds)
