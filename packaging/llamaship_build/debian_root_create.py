"""Making the Debian 11 build root: debootstrap, clang-16, and CPython built from Debian's source.

Created once per machine (about 10 minutes) under the build cache, staged beside its final
place and renamed into it when complete; or unpacked from a root tarball that `root-export`
wrote (`debian_root_tarball`), where Debian 11 can no longer be fetched. The Debian mirror is
a setting. `docs/platforms.md` explains the choice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from llamaship_build import debian_root_tarball
from llamaship_build.debian_root import (
    PYTHON_PREFIX,
    PYTHON_VERSION,
    DebianRoot,
    mounts_under,
    remove_root,
)
from llamaship_build.debian_root_setup import HostFacts, carry_out, plan_setup
from llamaship_build.errors import BuildError
from llamaship_build.settings import DEBIAN_MIRROR, BuildSettings
from llamaship_build.toolchain import HOST, temporary_dir
from llamaship_contract.hashing import sha256_of

_log = logging.getLogger(__name__)

SUITE = "bullseye"
MIRROR = DEBIAN_MIRROR
# An archive's Release files are past their Valid-Until date; their signatures still count.
_ARCHIVE_APT_CONF = 'Acquire::Check-Valid-Until "false";\n'
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
PYTHON_SOURCE = (
    f"{MIRROR}/pool/main/p/python3.11/python3.11_{PYTHON_VERSION}.orig.tar.gz",
    "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849",
    26437858,
)
# The Python sources are Debian 12's (bookworm), fetched from deb.debian.org whatever the mirror.
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
# Bump when the recipe below changes: the root is rebuilt under a new name.
_RECIPE = 3


def recipe_key() -> str:
    """The hash of everything the root is made from: it names the root and its tarball."""
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


def root_name() -> str:
    """The root's directory name under `roots/` (and its tarball's, see `tarball_name`)."""
    return f"{SUITE}-{recipe_key()}"


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


def write_sources(target: Path, mirror: str, security_mirror: str) -> None:
    """The root's apt sources: `mirror` (and its -updates) and `security_mirror`."""
    (target / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {security_mirror} {SUITE}-security main\n"
    )
    archive_conf = target / "etc/apt/apt.conf.d/99llamaship-archive"
    if mirror != MIRROR:
        archive_conf.parent.mkdir(parents=True, exist_ok=True)
        archive_conf.write_text(_ARCHIVE_APT_CONF)
    else:
        archive_conf.unlink(missing_ok=True)


def debootstrap(
    target: Path, mirror: str = MIRROR, security_mirror: str = MIRROR + "-security"
) -> DebianRoot:
    """A minimal Debian 11 system at `target` (about 1-2 minutes), with the security sources."""
    if shutil.which("debootstrap") is None:
        msg = "debootstrap is missing: apt-get install debootstrap (the Linux build needs it)"
        raise BuildError(msg)
    # --force-check-gpg: without Debian's keyring debootstrap would only warn and go on.
    HOST.run(
        ["debootstrap", "--force-check-gpg", "--variant=minbase", SUITE, str(target), mirror],
        what=f"debootstrap Debian 11 from {mirror} (about 1-2 minutes)",
    )
    write_sources(target, mirror, security_mirror)
    return DebianRoot(target)


def _create(staging: Path, settings: BuildSettings) -> None:
    debootstrap(staging, settings.debian_mirror, settings.debian_security_mirror)
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


def check_root(root: DebianRoot) -> None:
    """The root builds: its CPython has its extension modules, clang++-16 compiles and runs."""
    root.run(
        [root.python, "-c", "import ctypes, ssl, sqlite3, lzma, bz2, zlib, uuid"],
        what="checking the root's CPython",
    )
    with root.scratch() as scratch:
        (scratch / "hello.cc").write_text(
            '#include <iostream>\nint main() { std::cout << "hello\\n"; }\n'
        )
        inside = root.inside(scratch)
        root.run(
            ["clang++-16", "-O1", "-o", f"{inside}/hello", f"{inside}/hello.cc"],
            what="checking the root's clang++-16",
        )
        root.run([f"{inside}/hello"], what="running what the root's clang++-16 built")


def _unpack(staging: Path, settings: BuildSettings, source: str) -> None:
    with temporary_dir(staging.parent) as scratch:
        tarball = debian_root_tarball.fetch_tarball(source, scratch)
        sha256 = debian_root_tarball.expected_sha256(tarball, settings.debian_root_sha256)
        _log.info("unpacking the Debian 11 root from %s (sha256 %s)", tarball, sha256)
        debian_root_tarball.unpack_root(tarball, staging, sha256=sha256, recipe=recipe_key())
    write_sources(staging, settings.debian_mirror, settings.debian_security_mirror)


def ensure_debian_root(
    cache: Path,
    settings: BuildSettings | None = None,
    *,
    facts: HostFacts | None = None,
    check: Callable[[DebianRoot], None] = check_root,
) -> DebianRoot:
    """The Debian 11 build root, created on first use (about 10 minutes) and cached.

    With `settings.debian_root_tarball` it is unpacked from that tarball instead, then `check`ed
    (does it build?) before use. Missing set-up tools are installed first (`debian_root_setup`).
    """
    settings = settings or BuildSettings.resolve(os.environ)
    facts = facts or HostFacts.of_this_machine()
    if sys.platform != "linux":
        msg = "the Debian 11 root is Linux's: set LLAMASHIP_BUILD_LINUX_TOOLCHAIN=host elsewhere"
        raise BuildError(msg)
    carry_out(plan_setup(facts, from_tarball=True))  # refuses without root: chroot needs it
    tarball = settings.debian_root_tarball
    path = cache / "roots" / root_name()
    if (path / debian_root_tarball.COMPLETE).is_file():
        return DebianRoot(path)
    staging = path.with_name(path.name + ".partial")
    remove_root(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    if tarball is not None:
        _unpack(staging, settings, tarball)
        check(DebianRoot(staging))
    else:
        carry_out(plan_setup(facts, from_tarball=False))
        _log.info("creating the Debian 11 build root in %s (once per machine)", path)
        _create(staging, settings)
    (staging / debian_root_tarball.COMPLETE).write_text("")
    remove_root(path)
    os.replace(staging, path)
    return DebianRoot(path)


def export(cache: Path, out_dir: Path, settings: BuildSettings | None = None) -> tuple[Path, str]:
    """The build root (made first if need be) as a tarball in `out_dir`: (path, sha256)."""
    root = ensure_debian_root(cache, settings)
    return debian_root_tarball.export_root(
        root.path,
        out_dir,
        recipe=recipe_key(),
        name=root_name(),
        mounts=frozenset(mounts_under(root.path)),
    )
