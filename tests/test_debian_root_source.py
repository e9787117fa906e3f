"""Where the Debian 11 root comes from: a mirror (a setting), or a root tarball unpacked
without debootstrap or the network; and what a fresh machine installs first."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from llamaship_build import debian_root_create
from llamaship_build.debian_root import DebianRoot, remove_root
from llamaship_build.debian_root_create import (
    MIRROR,
    ensure_debian_root,
    recipe_key,
    root_name,
    write_sources,
)
from llamaship_build.debian_root_setup import HostFacts, SetupPlan, carry_out, plan_setup
from llamaship_build.debian_root_tarball import (
    COMPLETE,
    MANIFEST,
    export_root,
    tarball_name,
    unpack_root,
)
from llamaship_build.errors import BuildError
from llamaship_build.project import cache_dir
from llamaship_build.settings import BuildSettings

REPO = Path(__file__).resolve().parents[1]


def _fake_root(path: Path) -> Path:
    """A few files shaped like a root's: a symlink out of /, a hard link, modes, caches."""
    (path / "usr/bin").mkdir(parents=True)
    (path / "usr/bin/tool").write_text("#!/bin/sh\necho tool\n")
    (path / "usr/bin/tool").chmod(0o755)
    os.link(path / "usr/bin/tool", path / "usr/bin/tool-again")
    (path / "bin").symlink_to("usr/bin")
    (path / "etc/apt").mkdir(parents=True)
    (path / "etc/localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    (path / "tmp").mkdir()
    (path / "tmp/scratch").write_text("left over by a build")
    (path / "tmp").chmod(0o1777)
    (path / "var/cache/apt/archives").mkdir(parents=True)
    (path / "var/cache/apt/archives/clang.deb").write_bytes(b"deb")
    (path / "var/cache/llamaship").mkdir()
    (path / "var/cache/llamaship/venv").write_text("a build venv")
    (path / "work/checkout").mkdir(parents=True)  # a bind mount point of a build
    (path / "proc/1").mkdir(parents=True)  # mounted now, see _exported
    (path / COMPLETE).write_text("")
    return path


def _exported(tmp_path: Path, recipe: str | None = None) -> tuple[Path, str]:
    source = _fake_root(tmp_path / "source")
    return export_root(source, tmp_path / "out", recipe=recipe or recipe_key(), name=root_name())


def _settings(**values: str) -> BuildSettings:
    return BuildSettings.resolve(values)


ROOT_FACTS = HostFacts(
    is_root=True, has_apt_get=True, has_debootstrap=True, has_keyring=True, glibc="2.36"
)


def test_an_exported_root_is_unpacked_instead_of_debootstrapped(tmp_path: Path) -> None:
    tarball, sha256 = _exported(tmp_path)
    assert tarball.name == tarball_name(root_name())
    assert tarball.with_name(tarball.name + ".sha256").read_text().split() == [
        sha256,
        tarball.name,
    ]
    checked: list[Path] = []
    settings = _settings(
        LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL=str(tarball),
        LLAMASHIP_BUILD_DEBIAN_MIRROR="http://archive.debian.org/debian/",
    )
    # No debootstrap on this "machine": the tarball route does not need it.
    facts = HostFacts(
        is_root=True, has_apt_get=False, has_debootstrap=False, has_keyring=False, glibc=""
    )
    root = ensure_debian_root(
        tmp_path / "cache",
        settings,
        facts=facts,
        check=lambda root: checked.append(root.path),
    )
    assert root.path == tmp_path / "cache" / "roots" / root_name()
    assert checked == [root.path.with_name(root.path.name + ".partial")]  # before it is used
    assert (root.path / COMPLETE).is_file()
    assert (root.path / "usr/bin/tool").read_text() == "#!/bin/sh\necho tool\n"
    assert stat.S_IMODE((root.path / "usr/bin/tool").stat().st_mode) == 0o755
    assert (root.path / "usr/bin/tool").stat().st_ino == (
        root.path / "usr/bin/tool-again"
    ).stat().st_ino
    assert (root.path / "bin").readlink() == Path("usr/bin")
    assert (root.path / "etc/localtime").readlink() == Path("/usr/share/zoneinfo/Etc/UTC")
    assert stat.S_IMODE((root.path / "tmp").stat().st_mode) == 0o1777
    assert json.loads((root.path / MANIFEST).read_text())["recipe"] == recipe_key()
    # Build leftovers, downloaded packages and mount points are not exported.
    assert list((root.path / "tmp").iterdir()) == []
    assert list((root.path / "var/cache/llamaship").iterdir()) == []
    assert list((root.path / "var/cache/apt/archives").iterdir()) == []
    assert not (root.path / "work").exists()
    assert list((root.path / "proc").iterdir()) == []  # the mount point, not what was mounted
    # The sources are the configured mirror's; an archive's expired Release files are accepted.
    sources = (root.path / "etc/apt/sources.list").read_text()
    assert "deb http://archive.debian.org/debian bullseye main" in sources
    assert "deb http://archive.debian.org/debian-security bullseye-security main" in sources
    assert (root.path / "etc/apt/apt.conf.d/99llamaship-archive").is_file()
    # Once complete it is reused as is.
    again = ensure_debian_root(tmp_path / "cache", settings, facts=facts, check=pytest.fail)
    assert again.path == root.path


def test_the_default_mirror_needs_no_archive_exception(tmp_path: Path) -> None:
    (tmp_path / "etc/apt/apt.conf.d").mkdir(parents=True)
    (tmp_path / "etc/apt/apt.conf.d/99llamaship-archive").write_text("x")
    write_sources(tmp_path, MIRROR, MIRROR + "-security")
    assert (
        "deb http://deb.debian.org/debian-security bullseye-security main"
        in (tmp_path / "etc/apt/sources.list").read_text()
    )
    assert not (tmp_path / "etc/apt/apt.conf.d/99llamaship-archive").exists()


@pytest.fixture
def https_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """(directory, its https:// URL): served on loopback with a certificate trusted here only."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make a test certificate: apt-get install openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_tarball_url_is_downloaded_and_checked(
    tmp_path: Path, https_dir: tuple[Path, str]
) -> None:
    tarball, sha256 = _exported(tmp_path)
    served, url = https_dir
    shutil.copyfile(tarball, served / tarball.name)
    settings = _settings(
        LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL=f"{url}/{tarball.name}",
        LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256=sha256,
    )
    root = ensure_debian_root(
        tmp_path / "cache", settings, facts=ROOT_FACTS, check=lambda root: None
    )
    assert (root.path / "usr/bin/tool").is_file()
    assert sorted(path.name for path in (tmp_path / "cache/roots").iterdir()) == [
        root.path.name  # the download was a scratch file, now gone
    ]
    wrong = _settings(
        LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL=f"{url}/{tarball.name}",
        LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256="f" * 64,
    )
    with pytest.raises(BuildError, match=r"not the expected f{64}: refused"):
        ensure_debian_root(tmp_path / "other", wrong, facts=ROOT_FACTS, check=pytest.fail)
    missing = _settings(
        LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL=f"{url}/gone.tar.zst",
        LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256=sha256,
    )
    with pytest.raises(BuildError, match=r"cannot download .*gone.tar.zst: HTTP Error 404"):
        ensure_debian_root(tmp_path / "other", missing, facts=ROOT_FACTS, check=pytest.fail)


def _refused(tmp_path: Path, tarball: Path, **env: str) -> str:
    settings = _settings(LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL=str(tarball), **env)
    with pytest.raises(BuildError) as error:
        ensure_debian_root(tmp_path / "cache", settings, facts=ROOT_FACTS, check=pytest.fail)
    assert not (tmp_path / "cache" / "roots" / root_name()).exists()
    return str(error.value)


def test_a_tarball_that_is_not_the_one_recorded_is_refused(tmp_path: Path) -> None:
    tarball, sha256 = _exported(tmp_path)
    with tarball.open("r+b") as data:
        data.seek(-1, os.SEEK_END)
        data.write(b"\0")
    assert f"not the expected {sha256}: refused" in _refused(tmp_path, tarball)
    other = "0" * 64
    assert f"not the expected {other}" in _refused(
        tmp_path, tarball, LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256=other
    )
    tarball.with_name(tarball.name + ".sha256").unlink()
    assert "has no sha256: set LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256" in _refused(tmp_path, tarball)


def test_a_tarball_of_another_recipe_is_refused(tmp_path: Path) -> None:
    tarball, _ = _exported(tmp_path, recipe="0123456789abcdef")
    message = _refused(tmp_path, tarball)
    assert "holds the root of recipe 0123456789abcdef" in message
    assert f"this checkout's is {recipe_key()}" in message


def test_a_missing_tarball_is_named(tmp_path: Path) -> None:
    message = _refused(tmp_path, tmp_path / "nowhere.tar.zst")
    assert "nowhere.tar.zst is not a file" in message
    assert "root-export" in message


def _hostile(tmp_path: Path, members: list[tarfile.TarInfo]) -> Path:
    tarball = tmp_path / "hostile.tar.zst"
    manifest = json.dumps({"recipe": "r"}).encode()
    with (
        tarball.open("wb") as raw,
        zstandard.ZstdCompressor().stream_writer(raw) as out,
        tarfile.open(fileobj=out, mode="w|") as tar,
    ):
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for member in members:
            data = b"x" if member.isfile() else b""
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return tarball


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    return member


OUTSIDE = "/tmp/llamaship-outside-the-root"  # nothing may land there


@pytest.mark.parametrize(
    ("members", "refusal"),
    [
        ([_member("../escaped")], "outside the destination"),
        (
            [_member("up", tarfile.SYMTYPE, OUTSIDE), _member("up/escaped")],
            "outside the destination",
        ),
        ([_member("etc/passwd", tarfile.LNKTYPE, "/etc/passwd")], "links outside the root"),
        ([_member("etc/shadow", tarfile.LNKTYPE, "../../shadow")], "links outside the root"),
        ([_member("dev/sda", tarfile.BLKTYPE)], "holds a device file, dev/sda"),
    ],
    ids=["dotdot", "through-a-symlink", "hardlink-absolute", "hardlink-dotdot", "device"],
)
def test_a_member_outside_the_root_is_refused(
    tmp_path: Path, members: list[tarfile.TarInfo], refusal: str
) -> None:
    tarball = _hostile(tmp_path, members)
    with pytest.raises(BuildError, match=refusal):
        unpack_root(
            tarball,
            tmp_path / "root",
            sha256=debian_root_create.sha256_of(tarball),
            recipe="r",
        )
    assert not (tmp_path / "escaped").exists()
    assert not Path(OUTSIDE).exists()


def test_the_tarball_settings_are_checked_at_once() -> None:
    with pytest.raises(BuildError) as error:
        _settings(
            LLAMASHIP_BUILD_DEBIAN_MIRROR="ftp.debian.org",
            LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL="https://example.com/root.tar.zst",
        )
    assert "LLAMASHIP_BUILD_DEBIAN_MIRROR='ftp.debian.org' is invalid" in str(error.value)
    assert "also set LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256" in str(error.value)
    with pytest.raises(BuildError, match="expected a file path or an https:// URL"):
        _settings(LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL="http://example.com/root.tar.zst")
    with pytest.raises(BuildError, match=r"LLAMASHIP_BUILD_DEBIAN_SECURITY_MIRROR=.* is invalid"):
        _settings(LLAMASHIP_BUILD_DEBIAN_SECURITY_MIRROR="http://a bullseye main\ndeb http://b")
    with pytest.raises(BuildError, match="expected 64 hex digits"):
        _settings(LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256="abc")
    resolved = _settings(LLAMASHIP_BUILD_DEBIAN_SECURITY_MIRROR="https://security.example/debian/")
    assert resolved.debian_mirror == MIRROR
    assert resolved.debian_security_mirror == "https://security.example/debian"


def _facts(*, root: bool, apt: bool, debootstrap: bool, keyring: bool = True) -> HostFacts:
    return HostFacts(
        is_root=root,
        has_apt_get=apt,
        has_debootstrap=debootstrap,
        has_keyring=keyring,
        glibc="2.36",
    )


def test_root_on_a_debian_like_system_installs_what_is_missing() -> None:
    plan = plan_setup(
        _facts(root=True, apt=True, debootstrap=False, keyring=False), from_tarball=False
    )
    assert plan == SetupPlan(install=("debootstrap", "debian-archive-keyring"))
    assert plan_setup(_facts(root=True, apt=True, debootstrap=True), from_tarball=False) == (
        SetupPlan()
    )
    assert plan_setup(_facts(root=True, apt=False, debootstrap=False), from_tarball=True) == (
        SetupPlan()
    )


def test_the_install_is_announced_and_shown(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[tuple[list[str], dict[str, str]]] = []

    def run(command: list[str], *, what: str, env: dict[str, str]) -> None:
        ran.append((command, env))

    with caplog.at_level("INFO"):
        carry_out(SetupPlan(install=("debootstrap",)), run=run)
    assert "debootstrap missing: installing with apt-get" in caplog.text
    assert [command for command, _ in ran] == [
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"],
    ]
    assert all("-q" not in " ".join(command) for command, _ in ran)  # progress stays visible
    carry_out(SetupPlan(), run=pytest.fail)


@pytest.mark.parametrize("from_tarball", [False, True])
def test_without_root_one_line_says_how_to_build_and_the_floor(from_tarball: bool) -> None:
    plan = plan_setup(_facts(root=False, apt=True, debootstrap=True), from_tarball=from_tarball)
    assert plan.install == ()
    assert plan.refusal is not None
    assert "\n" not in plan.refusal
    assert "sudo scripts/nox -s dist" in plan.refusal
    assert "LLAMASHIP_BUILD_LINUX_TOOLCHAIN=host LLAMASHIP_BUILD_GLIBC_FLOOR=2.36" in plan.refusal
    assert "the bundle then needs glibc >= 2.36" in plan.refusal
    with pytest.raises(BuildError, match="needs root"):
        carry_out(plan, run=pytest.fail)


def test_root_without_apt_get_is_told_the_other_routes() -> None:
    plan = plan_setup(_facts(root=True, apt=False, debootstrap=False), from_tarball=False)
    assert plan.refusal is not None
    assert "debootstrap is missing and this system has no apt-get" in plan.refusal
    assert "LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL" in plan.refusal
    assert "LLAMASHIP_BUILD_LINUX_TOOLCHAIN=host" in plan.refusal


def _offline(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`command` in a network namespace of its own: no interface but loopback."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is needed to cut the network: apt-get install util-linux")
    return subprocess.run(
        [unshare, "--net", *command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.root
@pytest.mark.slow
def test_the_exported_root_builds_without_the_network(tmp_path: Path) -> None:
    """The machine's root, exported, then unpacked and checked (CPython, clang++-16 compiles
    and runs a program) in a process that has no network at all."""
    cut = _offline(
        [sys.executable, "-c", "import socket; socket.create_connection(('1.1.1.1', 80), 5)"], {}
    )
    assert cut.returncode != 0 and "Network is unreachable" in cut.stderr
    started = time.monotonic()
    tarball, sha256 = debian_root_create.export(cache_dir(), tmp_path / "out")
    exported = time.monotonic() - started
    cache = tmp_path / "cache"
    started = time.monotonic()
    result = _offline(
        [sys.executable, "-m", "llamaship_build", "root"],
        {
            "LLAMASHIP_BUILD_CACHE": str(cache),
            "LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL": str(tarball),
            "LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256": sha256,
        },
    )
    imported = time.monotonic() - started
    print(
        f"root tarball {tarball.stat().st_size:,} bytes; export {exported:.0f} s, "
        f"offline import and check {imported:.0f} s"
    )
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        # The program clang++-16 built printed hello; the command prints the root's path.
        assert result.stdout.split() == ["hello", str(cache / "roots" / root_name())]
        assert "running what the root's clang++-16 built" in result.stderr
        assert (
            DebianRoot(cache / "roots" / root_name())
            .output(["/opt/python/bin/python3.11", "-c", "import ssl; print(ssl.OPENSSL_VERSION)"])
            .startswith("OpenSSL 1.1.1")
        )
    finally:
        remove_root(cache / "roots" / root_name())


def test_a_build_without_the_set_up_tools_stops_before_making_anything(tmp_path: Path) -> None:
    facts = _facts(root=True, apt=False, debootstrap=False)
    with pytest.raises(BuildError, match="debootstrap is missing and this system has no apt-get"):
        ensure_debian_root(tmp_path / "cache", _settings(), facts=facts, check=pytest.fail)
    assert not (tmp_path / "cache" / "roots" / f"{root_name()}.partial").exists()
    not_root = _facts(root=False, apt=True, debootstrap=True)
    with pytest.raises(BuildError, match="needs root"):
        ensure_debian_root(tmp_path / "cache", _settings(), facts=not_root, check=pytest.fail)
