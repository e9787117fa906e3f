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
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from llamaship_build.errors import BuildError
from llamaship_build.project import cache_dir
from llamaship_build.settings import BuildSettings
from llamaship_contract.hashing import sha256_of

_log = logging.getLogger(__name__)

SUITE = "bullseye"
MIRROR = "http://deb.debian.org/debian"
SOURCES = (
    f"deb {MIRROR} {SUITE} main\n"
    f"deb {MIRROR} {SUITE}-updates main\n"
    f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
)
# clang-16: bullseye's GCC 10 rejects -mamx-tile/-mavxvnni (sapphirerapids, alderlake variants).
PACKAGES = (
    "clang-16",
    "make",
    "binutils",
    "pkg-config",
    "libc6-dev",
    "libssl-dev",
    "zlib1g-dev",
    "libffi-dev",
    "libbz2-dev",
    "liblzma-dev",
    "libsqlite3-dev",
    "uuid-dev",
    "ca-certificates",
    "xz-utils",
    "file",
)
PYTHON_VERSION = "3.11.2"
PYTHON_SOURCE = (
    f"{MIRROR}/pool/main/p/python3.11/python3.11_{PYTHON_VERSION}.orig.tar.gz",
    "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849",
    26437858,
)
# Debian's packaging of that source: its security and crash fixes (CVEs 2023-2024) are applied;
# its layout patches (dist-packages, multiarch) are not, so the build stays a plain --prefix one.
PYTHON_DEBIAN = (
    f"{MIRROR}/pool/main/p/python3.11/python3.11_{PYTHON_VERSION}-6+deb12u6.debian.tar.xz",
    "35139070c56095690503166248ea5a8eb90e53704eba137e3decbb0ec2bc01ec",
    248364,
)
PYTHON_PATCHES = (
    "shutdown-deadlock.diff",
    "frame_dealloc-crash.diff",
    "CVE-2024-0450.patch",
    "CVE-2023-6597.patch",
    "relfile-nullptr-dereference.patch",
    "CVE-2023-41105-path-truncation.patch",
    "CVE-2023-40217-ssl-pre-close-flaw.patch",
    "CVE-2023-40217-ref-cycle.patch",
    "CVE-2023-40217-test-reliability.patch",
    "CVE-2023-24329-strip-control-chars-urlsplit.patch",
    "CVE-2024-0397.diff",
    "CVE-2024-4032.diff",
    "CVE-2024-8088.diff",
    "0001-3.11-gh-123270-Replaced-SanitizedNames-with-a-more-s.patch",
    "CVE-2024-6232.patch",
    "0001-3.11-CVE-2023-27043-gh-102988-Reject-malformed-addre.patch",
    "0002-3.11-gh-121650-Encode-newlines-in-headers-and-verify.patch",
    "0003-3.11-gh-123067-Fix-quadratic-complexity-in-parsing-q.patch",
    "0004-3.11-gh-124651-Quote-template-strings-in-venv-activa.patch",
    "0005-3.11-gh-103848-Adds-checks-to-ensure-that-bracketed-.patch",
    "0001-3.11-gh-105704-Disallow-square-brackets-and-in-domai.patch",
    "0002-3.11-gh-100884-email-_header_value_parser-don-t-enco.patch",
    "0003-3.11-gh-118643-Fix-AttributeError-in-the-email-modul.patch",
)
PYTHON_PREFIX = "/opt/python"
COMPILERS = {"CC": "clang-16", "CXX": "clang++-16"}
DEBIAN_NAME = f"debian11-clang16-py{PYTHON_VERSION}"
# Bump when the recipe below changes: the root is rebuilt under a new name.
_RECIPE = 3
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


def _check(
    result: subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes], what: str
) -> None:
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
        _check(
            subprocess.run(list(command), env={**os.environ, **(env or {})}, cwd=cwd, check=False),
            what,
        )

    def output(self, command: Sequence[str]) -> str:
        return subprocess.run(
            list(command), capture_output=True, text=True, check=True
        ).stdout.strip()

    def scratch(self) -> contextlib.AbstractContextManager[Path]:
        return _temporary_dir(None)

    def inside(self, host_path: Path) -> str:
        return str(host_path)

    def cache(self) -> Path:
        return cache_dir()

    def outside(self, inside: str) -> Path:
        return Path(inside)


@contextlib.contextmanager
def _temporary_dir(parent: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="llamaship-", dir=parent) as name:
        yield Path(name)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        targets = [line.split()[1].replace("\\040", " ") for line in mounts]
    return sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True)


def _unmount_all(root: Path) -> None:
    for target in _mounts_under(root):
        subprocess.run(["umount", "-l", target], check=False)
    if _mounts_under(root):
        msg = f"cannot unmount {', '.join(_mounts_under(root))}: unmount them by hand"
        raise BuildError(msg)


def _remove_root(root: Path) -> None:
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
            _check(subprocess.run(argv, env=self._environment(env), check=False), what)

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
        return _temporary_dir(self.path / "tmp")

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


def _recipe_key() -> str:
    material = json.dumps(
        {
            "suite": SUITE,
            "packages": PACKAGES,
            "python": PYTHON_SOURCE,
            "debian": PYTHON_DEBIAN,
            "patches": PYTHON_PATCHES,
            "recipe": _RECIPE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _download_pinned(pin: tuple[str, str, int], dest: Path) -> Path:
    url, sha256, size = pin
    archive = dest / url.rsplit("/", 1)[1]
    _log.info("downloading %s (%.1f MB)", url, size / 1e6)
    with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)
    if archive.stat().st_size != size or sha256_of(archive) != sha256:
        msg = f"{url} does not match its pinned size and sha256: refused"
        raise BuildError(msg)
    return archive


def debootstrap(target: Path) -> DebianRoot:
    """A minimal Debian 11 system at `target` (about 1-2 minutes), with the security sources."""
    if shutil.which("debootstrap") is None:
        msg = "debootstrap is missing: apt-get install debootstrap (the Linux build needs it)"
        raise BuildError(msg)
    # --force-check-gpg: without Debian's keyring debootstrap would only warn and go on.
    HOST.run(
        ["debootstrap", "--force-check-gpg", "--variant=minbase", SUITE, str(target), MIRROR],
        what="debootstrap Debian 11 (about 1-2 minutes)",
    )
    (target / "etc/apt/sources.list").write_text(SOURCES)
    return DebianRoot(target)


def _create(staging: Path) -> None:
    debootstrap(staging)
    root = DebianRoot(staging)
    apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
    root.run(["apt-get", "update"], what="apt-get update in the Debian 11 root", env=apt_env)
    root.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
        what="installing clang-16 and the Python build dependencies",
        env=apt_env,
    )
    _build_python(root)


def _build_python(root: DebianRoot) -> None:
    """CPython from Debian's python3.11 source, shared (`--enable-shared`), in /opt/python."""
    staging = root.path
    source = _download_pinned(PYTHON_SOURCE, staging / "tmp")
    debian_tar = _download_pinned(PYTHON_DEBIAN, staging / "tmp")
    with tarfile.open(source) as tar:
        tar.extractall(staging / "usr/src", filter="data")
    with tarfile.open(debian_tar) as tar:
        tar.extractall(staging / "tmp", filter="data")
    tree = f"/usr/src/Python-{PYTHON_VERSION}"
    for patch in PYTHON_PATCHES:
        HOST.run(
            [
                "patch",
                "-p1",
                "--forward",
                "--quiet",
                "-i",
                str(staging / "tmp/debian/patches" / patch),
            ],
            what=f"applying Debian's {patch}",
            cwd=staging / tree.lstrip("/"),
        )
    jobs = str(os.cpu_count() or 1)
    # The multiarch dirs, spelled out: setup.py finds ffi.h and libffi only where it is told
    # (it asks `dpkg-architecture`, absent here), else _ctypes is built without libffi.
    root.run(
        [
            "./configure",
            "--enable-shared",
            f"--prefix={PYTHON_PREFIX}",
            "CPPFLAGS=-I/usr/include/x86_64-linux-gnu",
            f"LDFLAGS=-Wl,-rpath,{PYTHON_PREFIX}/lib -L/usr/lib/x86_64-linux-gnu",
        ],
        what="configuring CPython",
        cwd=Path(tree),
    )
    root.run(["make", f"-j{jobs}"], what="compiling CPython (about 5-10 minutes)", cwd=Path(tree))
    root.run(["make", "install"], what="installing CPython", cwd=Path(tree))
    root.run([f"{PYTHON_PREFIX}/bin/python3.11", "-m", "ensurepip"], what="pip for CPython")
    root.run(
        [
            f"{PYTHON_PREFIX}/bin/python3.11",
            "-c",
            "import ctypes, ssl, sqlite3, lzma, bz2, zlib, uuid",
        ],
        what="checking CPython's extension modules",
    )
    source.unlink()
    debian_tar.unlink()
    shutil.rmtree(staging / "tmp/debian")
    shutil.rmtree(staging / "usr/src" / f"Python-{PYTHON_VERSION}")


def ensure_debian_root(cache: Path) -> DebianRoot:
    """The Debian 11 build root, created on first use (about 10 minutes) and cached."""
    if sys.platform != "linux" or os.geteuid() != 0:
        msg = (
            "the Linux build for glibc 2.31 runs in a Debian 11 root and needs root "
            "(debootstrap, chroot); run it as root, or set LLAMASHIP_BUILD_LINUX_TOOLCHAIN=host "
            "to build against this machine's glibc (the bundle then needs that glibc)"
        )
        raise BuildError(msg)
    path = cache / "roots" / f"{SUITE}-{_recipe_key()}"
    if (path / ".llamaship-complete").is_file():
        return DebianRoot(path)
    staging = path.with_name(path.name + ".partial")
    _remove_root(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    _log.info("creating the Debian 11 build root in %s (once per machine)", path)
    _create(staging)
    (staging / ".llamaship-complete").write_text("")
    _remove_root(path)
    os.replace(staging, path)
    return DebianRoot(path)


HOST = HostToolchain()


def configured_name(settings: BuildSettings) -> str:
    """The name of the toolchain `select_toolchain` would pick, without creating anything."""
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
    return ensure_debian_root(cache).with_binds(*binds)
