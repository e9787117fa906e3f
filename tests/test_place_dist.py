"""`scripts/place-dist.mjs`, run with node on a fake `dist/`: it copies a bundle that matches its
manifest into an Electron app's resources, and refuses one that does not, leaving the resources
as they were."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llamaship_contract.bundle import BundleArchive, BundleManifest, Component
from llamaship_contract.document import dump_document_pretty
from llamaship_contract.names import BUNDLE_MANIFEST_NAME

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "place-dist.mjs"
ARCHIVE = "backend-0.1.0-linux_x86_64-cpu.tar.zst"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail(
            "node is missing: install Debian's nodejs package (.ci/run does)", pytrace=False
        )
    return found


def fake_dist(root: Path) -> Path:
    """A dist/ as `nox -s bundle` leaves it: backend/, the archive, its .sha256, the manifest."""
    dist = root / "dist"
    bundle = dist / "backend"
    (bundle / "_internal" / "llama_cpp" / "lib").mkdir(parents=True)
    executable = bundle / "backend"
    executable.write_bytes(b"\x7fELF fake backend")
    executable.chmod(0o755)
    library = bundle / "_internal" / "llama_cpp" / "lib" / "libllama.so.0"
    library.write_bytes(b"x" * 5000)
    library.with_name("libllama.so").symlink_to("libllama.so.0")
    archive = dist / ARCHIVE
    archive.write_bytes(b"archive bytes " * 100)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (dist / f"{ARCHIVE}.sha256").write_text(f"{digest}  {ARCHIVE}\n")
    files = [executable, library]
    manifest = BundleManifest(
        name="backend",
        version="0.1.0",
        variant="cpu",
        platform="linux_x86_64",
        llama_cpp_python="0.3.36",
        python="3.11.2",
        pyinstaller="6.22.3",
        input_key="k",
        toolchain="debian11-clang16-py3.11.2",
        glibc_floor="2.31",
        file_count=3,
        unpacked_bytes=sum(path.stat().st_size for path in files),
        largest_components=(Component(path="_internal/llama_cpp", bytes=5000),),
        archive=BundleArchive(name=ARCHIVE, bytes=archive.stat().st_size, sha256=digest),
    )
    (dist / BUNDLE_MANIFEST_NAME).write_bytes(dump_document_pretty(manifest))
    return dist


def place(dist: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node(), str(SCRIPT), "--dist", str(dist), "--dest", str(dest), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_matching_dist_is_placed_whole(tmp_path: Path) -> None:
    dist = fake_dist(tmp_path)
    resources = tmp_path / "app" / "resources"
    (resources / "backend").mkdir(parents=True)
    (resources / "backend" / "stale-file").write_text("from the last build")

    result = place(dist, resources)

    assert result.returncode == 0, result.stderr
    assert "backend 0.1.0 (linux_x86_64, 3 files) placed in" in result.stdout
    placed = resources / "backend"
    assert sorted(str(path.relative_to(placed)) for path in placed.rglob("*")) == [
        "_internal",
        "_internal/llama_cpp",
        "_internal/llama_cpp/lib",
        "_internal/llama_cpp/lib/libllama.so",
        "_internal/llama_cpp/lib/libllama.so.0",
        "backend",
        BUNDLE_MANIFEST_NAME,
    ]
    assert os.access(placed / "backend", os.X_OK)
    link = placed / "_internal" / "llama_cpp" / "lib" / "libllama.so"
    assert link.readlink() == Path("libllama.so.0")
    manifest = (placed / BUNDLE_MANIFEST_NAME).read_bytes()
    assert manifest == (dist / BUNDLE_MANIFEST_NAME).read_bytes()
    assert sorted(path.name for path in resources.iterdir()) == ["backend"]


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            lambda dist: (dist / ARCHIVE).write_bytes(b"archive bytes " * 99 + b"archive bytez "),
            "sha256",
        ),
        (lambda dist: (dist / ARCHIVE).unlink(), "missing (the manifest names it)"),
        (lambda dist: (dist / "backend" / "backend").unlink(), "backend/backend: missing"),
        (
            lambda dist: (dist / "backend" / "extra.so").write_bytes(b"1"),
            "4 files, 5018 bytes; the manifest says 3 files",
        ),
        (lambda dist: (dist / BUNDLE_MANIFEST_NAME).write_text("{}"), "not a bundle manifest"),
        (lambda dist: (dist / BUNDLE_MANIFEST_NAME).unlink(), "build the bundle first"),
    ],
    ids=["bad-hash", "no-archive", "no-executable", "extra-file", "bad-manifest", "no-manifest"],
)
def test_a_dist_that_does_not_match_is_refused_and_nothing_changes(
    tmp_path: Path, spoil: object, message: str
) -> None:
    dist = fake_dist(tmp_path)
    assert callable(spoil)
    spoil(dist)
    resources = tmp_path / "resources"
    (resources / "backend").mkdir(parents=True)
    (resources / "backend" / "previous").write_text("the last good copy")

    result = place(dist, resources)

    assert result.returncode == 1, result
    assert result.stderr.startswith("place-dist: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [path.name for path in resources.rglob("*")] == ["backend", "previous"]


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    missing_dest = subprocess.run(
        [node(), str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    unknown = place(tmp_path, tmp_path, "--force")
    assert missing_dest.returncode == unknown.returncode == 2
    assert "--dest RESOURCES_DIR is required" in missing_dest.stderr
    assert 'unknown argument "--force"' in unknown.stderr
