"""Running commands in the Debian 11 build root (`chroot`), with its mounts and environment.

`debian_root_create` makes the root; `toolchain` chooses between it and this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.toolchain import check_exit, temporary_dir

_log = logging.getLogger(__name__)

PYTHON_VERSION = "3.11.2"
PYTHON_PREFIX = "/opt/python"
COMPILERS = {"CC": "clang-16", "CXX": "clang++-16"}
DEBIAN_NAME = f"debian11-clang16-py{PYTHON_VERSION}"
_PATH = "/opt/python/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
_HOST_CA = "/etc/ssl/llamaship-host-ca.pem"


def _host_ca_bundle() -> str:
    """The CA bundle this machine's TLS clients use (SSL_CERT_FILE, else OpenSSL's default)."""
    import ssl

    return (
        os.environ.get("SSL_CERT_FILE")
        or ssl.get_default_verify_paths().cafile
        or "/etc/ssl/certs/ca-certificates.crt"
    )


def mounts_under(root: Path) -> list[str]:
    """What is mounted inside `root` now, deepest first."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        targets = [line.split()[1].replace("\\040", " ") for line in mounts]
    return sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True)


def _unmount_all(root: Path) -> None:
    for target in mounts_under(root):
        subprocess.run(["umount", "-l", target], check=False)
    if mounts_under(root):
        msg = f"cannot unmount {', '.join(mounts_under(root))}: unmount them by hand"
        raise BuildError(msg)


def remove_root(root: Path) -> None:
    """Delete a root directory, never while anything is mounted inside it."""
    if root.exists():
        _unmount_all(root)
        shutil.rmtree(root)


@dataclass(frozen=True)
class DebianRoot:
    """Commands run with `chroot` in a Debian 11 root; `binds` are visible at the same path."""

    path: Path
    binds: tuple[Path, ...] = field(default=())
    name: str = DEBIAN_NAME
    python: str = f"{PYTHON_PREFIX}/bin/python3.11"

    def with_binds(self, *paths: Path) -> DebianRoot:
        return DebianRoot(self.path, tuple(dict.fromkeys((*self.binds, *paths))))

    @contextlib.contextmanager
    def mounted(self) -> Iterator[None]:
        """/proc, /dev, the binds and resolv.conf in place for the duration; all unmounted.

        One command at a time per root (a file lock beside it): the mounts are the root's, and
        two builds on one machine would otherwise unmount each other's.
        """
        from filelock import FileLock

        with FileLock(self.path.with_name(self.path.name + ".lock")), self._mounts():
            yield

    @contextlib.contextmanager
    def _mounts(self) -> Iterator[None]:
        _unmount_all(self.path)
        try:
            (self.path / "proc").mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "proc", "proc", str(self.path / "proc")], check=True)
            subprocess.run(["mount", "--bind", "/dev", str(self.path / "dev")], check=True)
            for bind in self.binds:
                inside = self.path / str(bind.resolve()).lstrip("/")
                inside.mkdir(parents=True, exist_ok=True)
                subprocess.run(["mount", "--bind", str(bind.resolve()), str(inside)], check=True)
            shutil.copyfile("/etc/resolv.conf", self.path / "etc/resolv.conf")
            (self.path / _HOST_CA.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_host_ca_bundle(), self.path / _HOST_CA.lstrip("/"))
            yield
        finally:
            _unmount_all(self.path)

    def _environment(self, env: Mapping[str, str] | None) -> dict[str, str]:
        keep = {
            key: os.environ[key]
            for key in ("SOURCE_DATE_EPOCH", "PYTHONHASHSEED", "CMAKE_BUILD_PARALLEL_LEVEL")
            if key in os.environ
        }
        # Downloads in the root (pip) trust what this machine trusts, e.g. a company proxy's CA.
        trust = dict.fromkeys(("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE"), _HOST_CA)
        return {
            "PATH": _PATH,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            **COMPILERS,
            **trust,
            **keep,
            **(env or {}),
        }

    def run(
        self,
        command: Sequence[str],
        *,
        what: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        _log.info("%s (Debian 11 root): %s", what, " ".join(command))
        argv = [
            "chroot",
            str(self.path),
            "/bin/sh",
            "-c",
            'cd "$1" && shift && exec "$@"',
            "sh",
            str(cwd or "/"),
            *command,
        ]
        with self.mounted():
            check_exit(subprocess.run(argv, env=self._environment(env), check=False), what)

    def output(self, command: Sequence[str]) -> str:
        with self.mounted():
            result = subprocess.run(
                ["chroot", str(self.path), *command],
                capture_output=True,
                text=True,
                env=self._environment(None),
                check=True,
            )
        return result.stdout.strip()

    def scratch(self) -> contextlib.AbstractContextManager[Path]:
        """A directory under the root's /tmp: the same path inside, once `inside()` maps it."""
        return temporary_dir(self.path / "tmp")

    def cache(self) -> Path:
        return self.path / "var/cache/llamaship"

    def outside(self, inside: str) -> Path:
        path = Path(inside)
        if any(path.is_relative_to(bind.resolve()) for bind in self.binds):
            return path
        return self.path / path.relative_to("/")

    def inside(self, host_path: Path) -> str:
        """How a path under the root (or a bind) is named for commands in the root."""
        resolved = host_path.resolve()
        try:
            return "/" + resolved.relative_to(self.path.resolve()).as_posix()
        except ValueError:
            return str(resolved)
