"""The Linux bundle runs on glibc >= 2.31: its floor is computed at build time, checked, and the
built bundle is run for real inside a Debian 11 (bullseye) root."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamaship_build.debian_root import DebianRoot, remove_root
from llamaship_build.debian_root_create import debootstrap
from llamaship_build.errors import BuildError
from llamaship_build.glibc import (
    GLIBC,
    GLIBCXX,
    GlibcFloor,
    check_floor,
    file_needs,
    glibc_floor,
    glibc_floors,
)
from llamaship_build.project import cache_dir
from llamaship_build.settings import BuildSettings
from llamaship_build.toolchain import HOST, select_toolchain

BULLSEYE_GLIBC = "2.31"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"  # the children get a minimal PATH


def _library(tmp_path: Path, name: str, body: str) -> Path:
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.fail("a C compiler (cc) is needed: apt-get install gcc")
    source = tmp_path / f"{name}.c"
    source.write_text(body)
    library = tmp_path / "tree" / f"lib{name}.so"
    library.parent.mkdir(exist_ok=True)
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O0", "-o", str(library), str(source)], check=True
    )
    return library


def test_the_floor_is_the_newest_glibc_any_file_needs(tmp_path: Path) -> None:
    # pthread_create moved into libc in glibc 2.34: linking it here needs GLIBC_2.34.
    old = _library(
        tmp_path,
        "old",
        "#include <string.h>\nvoid copy(char *a, const char *b) { strcpy(a, b); }\n",
    )
    new = _library(
        tmp_path,
        "new",
        "#include <pthread.h>\n"
        "static void *run(void *x) { return x; }\n"
        "int start(pthread_t *t) { return pthread_create(t, 0, run, 0); }\n",
    )
    (tmp_path / "tree" / "notes.txt").write_text("GLIBC_9.99\0 in a text file does not count")
    assert max(file_needs(old)) < (2, 34) <= max(file_needs(new))
    floor = glibc_floor(tmp_path / "tree")
    assert floor == GlibcFloor(max(file_needs(new)), "libnew.so")
    with pytest.raises(
        BuildError,
        match=r"needs glibc 2\.\d+ \(libnew\.so\), above the "
        r"configured floor 2\.31",
    ):
        check_floor(floor, BULLSEYE_GLIBC)
    check_floor(glibc_floor(tmp_path / "tree"), floor.text())  # equal is fine


def test_the_libstdcxx_floor_is_read_the_same_way(tmp_path: Path) -> None:
    compiler = shutil.which("c++")
    if compiler is None:
        pytest.fail("a C++ compiler (c++) is needed: apt-get install g++")
    source = tmp_path / "text.cpp"
    source.write_text("#include <string>\nstd::string hello() { return std::string(40, 'x'); }\n")
    (tmp_path / "tree").mkdir()
    library = tmp_path / "tree" / "libtext.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    floor = glibc_floor(tmp_path / "tree", GLIBCXX)
    assert floor.needed_by == "libtext.so" and floor.version >= (3, 4)
    # one pass over the tree gives both families' floors
    assert glibc_floors(tmp_path / "tree", (GLIBC, GLIBCXX)) == (
        glibc_floor(tmp_path / "tree"),
        floor,
    )
    with pytest.raises(BuildError, match=r"needs libstdc\+\+ 3\.4\.\d+ \(libtext\.so\)"):
        check_floor(floor, "3.3")


def test_a_tree_without_elf_files_needs_no_glibc(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("plain")
    assert glibc_floor(tmp_path) == GlibcFloor((0,), "")


def test_build_settings_are_resolved_and_checked_in_one_place() -> None:
    assert BuildSettings.resolve({}) == BuildSettings()
    chosen = BuildSettings.resolve(
        {
            "LLAMASHIP_BUILD_LINUX_TOOLCHAIN": "HOST",
            "LLAMASHIP_BUILD_GLIBC_FLOOR": "2.35",
            "LLAMASHIP_BUILD_CACHE": "/tmp/x",
        }
    )
    assert (chosen.linux_toolchain, chosen.glibc_floor, chosen.build_cache) == (
        "host",
        "2.35",
        Path("/tmp/x"),
    )
    with pytest.raises(BuildError) as caught:
        BuildSettings.resolve(
            {
                "LLAMASHIP_BUILD_LINUX_TOOLCHAIN": "docker",
                "LLAMASHIP_BUILD_GLIBC_FLOOR": "new",
                "LLAMASHIP_BUILD_OVERLAY_SOURCE": "ftp",
            }
        )
    message = str(caught.value)
    for key in (
        "LLAMASHIP_BUILD_LINUX_TOOLCHAIN",
        "LLAMASHIP_BUILD_GLIBC_FLOOR",
        "LLAMASHIP_BUILD_OVERLAY_SOURCE",
    ):
        assert key in message


def test_the_host_toolchain_is_used_when_asked_for(tmp_path: Path) -> None:
    settings = BuildSettings(linux_toolchain="host")
    assert select_toolchain(settings, tmp_path) is HOST
    assert not (tmp_path / "roots").exists()


@pytest.mark.root
def test_a_root_with_something_mounted_inside_is_never_deleted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    precious = tmp_path / "checkout"
    precious.mkdir()
    (precious / "keep.txt").write_text("work")
    inside = root / str(precious).lstrip("/")
    inside.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(precious), str(inside)], check=True)
    try:
        remove_root(root)  # unmounts first, then deletes only the root's own files
    finally:
        subprocess.run(["umount", "-l", str(inside)], check=False)
    assert not root.exists()
    assert (precious / "keep.txt").read_text() == "work"


# -- the real thing: the bundle built in the Debian 11 root, run in another Debian 11 root ----


@pytest.fixture(scope="session")
def bullseye_runtime_root() -> DebianRoot:
    """A minimal Debian 11 system (debootstrap minbase), cached in the build cache."""
    path = cache_dir() / "roots" / "bullseye-minbase-run"
    if not (path / ".llamaship-complete").is_file():
        remove_root(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        debootstrap(path)
        (path / ".llamaship-complete").write_text("")
    return DebianRoot(path)


def _libc_version(root: DebianRoot) -> str:
    return root.output(["/usr/bin/getconf", "GNU_LIBC_VERSION"]).split()[-1]


@contextlib.contextmanager
def _bundle_inside(root: DebianRoot, dist: Path, model: Path) -> Iterator[Path]:
    """The bundle and the model copied into the root (under /opt/llamaship-test)."""
    place = root.path / "opt" / "llamaship-test"
    shutil.rmtree(place, ignore_errors=True)
    place.mkdir(parents=True)
    shutil.copytree(dist / "backend", place / "backend", symlinks=True)
    shutil.copyfile(model, place / "model.gguf")
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)


@pytest.mark.root
@pytest.mark.slow
def test_the_bundle_runs_serves_and_generates_in_debian_11(
    bundle_manifest: dict[str, Any],
    dist_dir: Path,
    gemma_model: Path,
    bullseye_runtime_root: DebianRoot,
) -> None:
    floor, cxx_floor = bundle_manifest["glibc_floor"], bundle_manifest["glibcxx_floor"]
    assert bundle_manifest["toolchain"].startswith("debian11")
    assert tuple(map(int, floor.split("."))) <= (2, 31), floor
    assert tuple(map(int, cxx_floor.split("."))) <= (3, 4, 28), cxx_floor  # GCC 10, Debian 11
    internal = dist_dir / "backend" / "_internal"
    assert not list(internal.glob("libstdc++.so*")), "the system's libstdc++ must serve"
    root = bullseye_runtime_root
    assert _libc_version(root) == BULLSEYE_GLIBC

    with _bundle_inside(root, dist_dir, gemma_model) as place, root.mounted():
        backend = "/opt/llamaship-test/backend/backend"
        detect = subprocess.run(
            [CHROOT, str(root.path), backend, "detect", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"LLAMASHIP_HOME": "/tmp/home", "PATH": "/usr/bin:/bin"},
        )
        assert detect.returncode == 0, detect.stderr
        assert json.loads(detect.stdout)["source"] in ("none", "nvml", "nvidia-smi")

        home = place / "home"
        port_file = home / "port"
        server = subprocess.Popen(
            [
                CHROOT,
                str(root.path),
                backend,
                "serve",
                "--port",
                "0",
                "--model",
                "/opt/llamaship-test/model.gguf",
            ],
            env={
                "LLAMASHIP_HOME": "/opt/llamaship-test/home",
                "PATH": "/usr/bin:/bin",
                "LLAMASHIP_PORT_FILE": "/opt/llamaship-test/home/port",
                "LLAMACPP_N_THREADS": "2",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not port_file.is_file() and time.monotonic() < deadline:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                time.sleep(0.2)
            base = f"http://127.0.0.1:{port_file.read_text().strip()}"
            capabilities = httpx.get(f"{base}/api/capabilities", timeout=30).json()
            assert capabilities["llama_cpp"]["variant"] == "cpu"
            reply = httpx.post(
                f"{base}/v1/chat/completions",
                timeout=120,
                json={
                    "messages": [{"role": "user", "content": "Count: one, two,"}],
                    "max_tokens": 8,
                    "temperature": 0,
                },
            ).json()
            assert reply["usage"]["completion_tokens"] >= 1
            assert reply["choices"][0]["message"]["content"]
        finally:
            server.terminate()
            server.communicate(timeout=60)  # reaps it and closes its pipe
