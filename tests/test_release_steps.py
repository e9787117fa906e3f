"""The release workflow's steps: key check, signing, per-OS asset names, SHA256SUMS, publishing,
the overlay source pin, the reproducibility comparison and the third-party notices."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from llamaship_build.archive import make_archive
from llamaship_build.errors import BuildError
from llamaship_build.fit_tool import FitTool
from llamaship_build.llama_wheel import Pin
from llamaship_build.notices import notices_text, python_licence
from llamaship_build.project import Project
from llamaship_build.publish import publish_commands
from llamaship_build.release_assets import SUMS_NAME, manifest_asset_name, sums_text, write_sums
from llamaship_build.release_sign import (
    UntrustedSigningKey,
    check_signing_key,
    sign_manifests,
    sign_release,
)
from llamaship_build.repro import compare_outputs, compile_twice, member_differences
from llamaship_build.spec import trusted_keys
from llamaship_build.toolchain import HOST, Toolchain
from llamaship_contract.signing import SignatureError, generate_keypair, key_id, verify
from llamaship_contract.trust import TrustedKeys, trusted
from overlay_kit.releases import Keys, ReleaseFactory, ReleaseSpec

ROOT = Path(__file__).resolve().parents[1]


def test_a_trusted_key_passes_and_an_untrusted_one_fails_naming_both() -> None:
    private, public = generate_keypair()
    other_private, other_public = generate_keypair()
    assert check_signing_key(private, trusted([other_public, public])) == key_id(public)
    with pytest.raises(UntrustedSigningKey) as caught:
        check_signing_key(other_private, trusted([public]))
    assert key_id(other_public) in str(caught.value)
    assert key_id(public) in str(caught.value)
    assert "runtime/llamaship/trusted_keys.json" in str(caught.value)
    with pytest.raises(UntrustedSigningKey):  # an index key cannot sign a release
        check_signing_key(other_private, TrustedKeys(release=(public,), index=(other_public,)))


def test_a_dry_run_signs_with_a_throwaway_key_that_nothing_trusts(
    built_overlay_unsigned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMASHIP_SIGNING_KEY", raising=False)
    shipped = trusted_keys(Project(ROOT))
    written = sign_release(
        built_overlay_unsigned,
        tmp_path / "release",
        shipped,
        serial=3,
        base_url="",
        key_file=None,
        lifetime=timedelta(days=1),
        dry_run=True,
    )
    index = tmp_path / "release" / "releases.json"
    assert index in written and (tmp_path / "release" / "overlays.json") in written
    signature = index.with_name("releases.json.sig").read_bytes()
    with pytest.raises(SignatureError, match="unknown key"):
        verify(index.read_bytes(), signature, shipped.for_index)


def test_the_cli_check_refuses_a_key_the_bundle_does_not_trust(tmp_path: Path) -> None:
    private, _ = generate_keypair()
    key_file = tmp_path / "key"
    key_file.write_text(private)
    result = subprocess.run(
        [sys.executable, "-m", "llamaship_build", "check-signing-key", "--key-file", str(key_file)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == UntrustedSigningKey.exit_code
    assert "is not in runtime/llamaship/trusted_keys.json" in result.stderr
    assert "Traceback" not in result.stderr
    assert trusted_keys(Project(ROOT))  # the release keys are there to check against


def test_manifests_are_validated_then_signed(built_overlay_unsigned: Path) -> None:
    private, public = generate_keypair()
    signatures = sign_manifests(built_overlay_unsigned, private)
    assert [path.name for path in signatures] == sorted(
        f"{path.name}.sig" for path in built_overlay_unsigned.glob("*.json")
    )
    for signature in signatures:
        manifest = signature.with_name(signature.name.removesuffix(".sig"))
        assert verify(manifest.read_bytes(), signature.read_bytes(), [public]) == key_id(public)
    (built_overlay_unsigned / "z-broken.json").write_text("{}")
    with pytest.raises(BuildError, match=r"refusing to sign .*z-broken\.json"):
        sign_manifests(built_overlay_unsigned, private)


@pytest.fixture
def built_overlay_unsigned(tmp_path: Path) -> Path:
    """Both layer manifests of a test release, without their signatures (as `overlay
    --unsigned` leaves them)."""
    private, public = generate_keypair()
    index = ReleaseFactory(tmp_path / "scratch", Keys(private=private, public=public)).publish(
        tmp_path / "release", ReleaseSpec()
    )
    out = tmp_path / "overlay"
    out.mkdir()
    for manifest in index.parent.glob("*.json"):
        if manifest.name not in {"releases.json", "overlays.json"}:
            (out / manifest.name).write_bytes(manifest.read_bytes())
    return out


@pytest.mark.parametrize(
    ("archive", "manifest"),
    [
        ("backend-0.1.0-linux-x86_64-cpu.tar.xz", "backend-0.1.0-linux-x86_64-cpu.manifest.json"),
        ("backend-0.1.0-windows-amd64-cpu.zip", "backend-0.1.0-windows-amd64-cpu.manifest.json"),
        ("backend-0.1.0-macos-arm64-cpu.tar.xz", "backend-0.1.0-macos-arm64-cpu.manifest.json"),
    ],
)
def test_bundle_manifests_get_per_os_asset_names(archive: str, manifest: str) -> None:
    assert manifest_asset_name(archive) == manifest


def test_sha256sums_cover_every_asset_once(tmp_path: Path) -> None:
    for name, content in (("b.zip", b"windows"), ("a.tar.zst", b"linux"), ("releases.json", b"{}")):
        (tmp_path / name).write_bytes(content)
    sums = write_sums(tmp_path)
    lines = sums.read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["a.tar.zst", "b.zip", "releases.json"]
    assert lines[0].split("  ")[0] == hashlib.sha256(b"linux").hexdigest()
    write_sums(tmp_path)  # again: SHA256SUMS never lists itself
    assert SUMS_NAME not in sums.read_text()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.tar.zst").write_bytes(b"mac")
    with pytest.raises(BuildError, match=r"two release assets are named a\.tar\.zst"):
        sums_text([tmp_path / "a.tar.zst", tmp_path / "other" / "a.tar.zst"])


def test_the_release_stays_a_draft_until_every_asset_is_uploaded(tmp_path: Path) -> None:
    assets = [tmp_path / "b.zip", tmp_path / "SHA256SUMS", tmp_path / "a.tar.zst"]
    create, upload, release = publish_commands("v1.2.3", assets, notes="")
    assert create[:4] == ["gh", "release", "create", "v1.2.3"] and "--draft" in create
    assert upload[:4] == ["gh", "release", "upload", "v1.2.3"]
    assert sorted(upload[4:]) == sorted(str(path) for path in assets)
    assert release[:4] == ["gh", "release", "edit", "v1.2.3"] and "--draft=false" in release
    with pytest.raises(BuildError, match="no release assets"):
        publish_commands("v1.2.3", [], notes="")


def _build(root: Path, content: bytes, manifest: str = "{}") -> Path:
    tree = root / "src" / "backend"
    tree.mkdir(parents=True)
    (tree / "backend").write_bytes(content)
    (tree / "lib.so").write_bytes(b"library")
    dist = root / "dist"
    dist.mkdir()
    make_archive(tree, dist / "backend-0.1.0-linux-x86_64-cpu.tar.zst", "zstd", mtime=0)
    (dist / "bundle-manifest.json").write_text(manifest)
    return dist


def test_repro_comparison_passes_identical_builds_and_names_the_differing_member(
    tmp_path: Path,
) -> None:
    first = _build(tmp_path / "a", b"same")
    second = _build(tmp_path / "b" / "longer", b"same")
    assert compare_outputs(first, second) == []
    third = _build(tmp_path / "c", b"other")
    problems = compare_outputs(first, third)
    assert len(problems) == 1 and "backend-0.1.0-linux-x86_64-cpu.tar.zst differs" in problems[0]
    assert "backend/backend:" in problems[0] and "backend/lib.so" not in problems[0]
    archive = "backend-0.1.0-linux-x86_64-cpu.tar.zst"
    assert member_differences(first / archive, third / archive)[0].startswith("backend/backend")
    (third / archive).unlink()
    assert compare_outputs(first, third) == [f"{archive}: only in {first}"]
    assert compare_outputs(tmp_path / "a" / "src", tmp_path / "c" / "src")[0].startswith("neither")
    other_manifest = _build(tmp_path / "d", b"same", manifest='{"built": 1}')
    assert compare_outputs(first, other_manifest) == ["bundle-manifest.json differs"]


def _compiled(cache: Path, library: bytes, tool: bytes) -> tuple[Path, FitTool]:
    (cache / "wheelhouse").mkdir(parents=True)
    wheel = cache / "wheelhouse" / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(zipfile.ZipInfo("llama_cpp/lib/libllama.so"), library)
    (cache / "fit-tool").mkdir()
    (cache / "fit-tool" / "llama-fit-params").write_bytes(tool)
    return wheel, FitTool(cache / "fit-tool")


def test_two_compiles_are_compared_wheel_member_by_member_and_tool_file_by_file(
    tmp_path: Path,
) -> None:
    outputs = iter([(b"same", b"tool"), (b"same", b"tool"), (b"same", b"tool"), (b"other", b"t2")])

    def compile_into(pin: Pin, cache: Path, toolchain: Toolchain) -> tuple[Path, FitTool]:
        return _compiled(cache, *next(outputs))

    pin = Pin("0.3.36", ("0" * 64,))
    assert compile_twice(pin, tmp_path / "same", HOST, compile_into) == []
    problems = compile_twice(pin, tmp_path / "differ", HOST, compile_into)
    assert problems[0].startswith("llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl differs")
    assert "llama_cpp/lib/libllama.so: mode 600 date (1980, 1, 1, 0, 0, 0) sha256" in problems[0]
    assert problems[1].startswith("llama-fit-params differs")
    with pytest.raises(BuildError, match="exists: give the compiles a new directory"):
        compile_twice(pin, tmp_path / "same", HOST, compile_into)


def test_notices_carry_each_shipped_distribution_and_its_licence_text(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    info = site / "demo_pkg-1.2.dist-info"
    (info / "licenses").mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.4\nName: demo-pkg\nVersion: 1.2\nLicense-Expression: BSD-3-Clause\n"
    )
    (info / "licenses" / "LICENSE").write_text("Copyright the demo authors")
    (info / "RECORD").write_text(
        "demo_pkg-1.2.dist-info/METADATA,,\ndemo_pkg-1.2.dist-info/licenses/LICENSE,,\n"
    )
    llama = ROOT / "packaging" / "licenses" / "llama.cpp-LICENSE.txt"
    text = notices_text(site, ["demo-pkg"], [("llama.cpp", "MIT", llama)])
    assert "demo-pkg 1.2\nLicence: BSD-3-Clause" in text
    assert "Copyright the demo authors" in text
    assert "Copyright (c) 2023-2024 The ggml authors" in text
    with pytest.raises(BuildError, match="not-there are not installed"):
        notices_text(site, ["demo-pkg", "not-there"], [])
    assert "PYTHON SOFTWARE FOUNDATION LICENSE" in python_licence().read_text()


def test_the_project_licence_is_mit_as_pyproject_says() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) the llamaship authors\n")
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()


def test_a_release_without_overlay_layers_signs_nothing_and_writes_no_index(
    tmp_path: Path,
) -> None:
    """A failed overlay job never blocks the CPU bundles: signing finds no layers, writes no
    index (the live one stays) and does not need the key."""
    written = sign_release(
        tmp_path / "overlay-not-built",
        tmp_path / "release",
        trusted_keys(Project(ROOT)),
        serial=3,
        base_url="",
        key_file=None,
        lifetime=timedelta(days=1),
    )
    assert written == []
    assert not (tmp_path / "release").exists()
    result = subprocess.run(
        [
            "sh",
            str(ROOT / "scripts" / "split-index"),
            str(tmp_path / "release"),
            str(tmp_path / "i"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"GITHUB_OUTPUT": str(tmp_path / "outputs"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "outputs").read_text() == "index=no\n"
