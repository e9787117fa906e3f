"""`python -m llamaship_build overlay|release`: source selection and the signed index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_overlay import (
    CREATED,
    LLAMA_CPP_VERSION,
    TEST_LEVEL,
    BuiltOverlay,
    KeyPair,
)
from fixtures_overlay import (
    MIN_DRIVER as TEST_DRIVER,
)
from llamaship_build.errors import BuildError
from llamaship_build.overlay_build import build_overlay
from llamaship_build.overlay_release import (
    MIN_DRIVER,
    ArchFamily,
    families,
    min_driver,
    release,
)
from llamaship_contract.overlay import LayerManifest, parse_manifest
from llamaship_contract.release_index import parse_index
from llamaship_contract.signing import verify
from overlay_kit.releases import published_entries

ROOT = Path(__file__).resolve().parents[1]


def _build_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        key: value for key, value in os.environ.items() if key != "LLAMASHIP_BUILD_OVERLAY_SOURCE"
    }
    return subprocess.run(
        [sys.executable, "-m", "llamaship_build", *args],
        cwd=ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_release_signs_an_index_over_the_built_layers(
    built_overlay: BuiltOverlay, tmp_path: Path
) -> None:
    key = built_overlay.keys.private
    *_, index, signature = release(
        built_overlay.out_dir, tmp_path / "release", serial=41, base_url="", signing_key_b64=key
    )
    data = index.read_bytes()
    assert verify(data, signature.read_bytes(), [built_overlay.keys.public])
    parsed = parse_index(data, origin="test")
    assert parsed.serial == 41
    (entry,) = published_entries(index)
    assert {layer.layer for layer in entry.layers} == {"cuda-runtime", "llama-cuda"}
    for layer in entry.layers:
        assert (tmp_path / "release" / layer.archive).is_file()
    with pytest.raises(BuildError, match="serials only grow"):
        release(
            built_overlay.out_dir, tmp_path / "release", serial=41, base_url="", signing_key_b64=key
        )


def test_release_without_layers_says_to_build_them(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="nox -s overlay"):
        release(tmp_path, tmp_path / "release", serial=1, base_url="", signing_key_b64="unused")


def test_overlay_is_skipped_when_no_cuda_source_is_configured() -> None:
    result = _build_cli("overlay", "--if-configured")
    assert result.returncode == 0, result.stderr
    assert "overlay skipped" in result.stderr
    assert "LLAMASHIP_BUILD_OVERLAY_SOURCE=build" in result.stderr


@pytest.mark.parametrize("source", [["wheel"], ["wheel-index"], ["auto"], ["build", "x.whl"]])
def test_overlay_sources_are_build_or_a_wheel_path(source: list[str]) -> None:
    result = _build_cli("overlay", "--source", *source)
    assert result.returncode == 2
    assert "--source takes build, or wheel PATH" in result.stderr


def test_an_unknown_configured_source_is_refused_with_the_known_ones() -> None:
    result = _build_cli("overlay", LLAMASHIP_BUILD_OVERLAY_SOURCE="wheel-index")
    assert result.returncode != 0
    assert "LLAMASHIP_BUILD_OVERLAY_SOURCE='wheel-index' is invalid" in result.stderr


def test_the_compress_mode_is_one_nvcc_knows() -> None:
    result = _build_cli("overlay", "--source", "build", "--compress-mode", "tiny")
    assert result.returncode == 2
    assert "--compress-mode: invalid choice: 'tiny'" in result.stderr


def test_overlay_without_a_signing_key_fails_before_any_download(tmp_path: Path) -> None:
    wheel = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    wheel.write_bytes(b"not used")
    result = _build_cli("overlay", "--source", "wheel", str(wheel), LLAMASHIP_SIGNING_KEY="")
    assert result.returncode != 0
    assert "LLAMASHIP_SIGNING_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_driver_floor_follows_the_compression_mode() -> None:
    """CUDA 12 drivers before 550.54.14 cannot decompress `size`/`balance` fat binaries; any
    CUDA 13 driver can; an unknown CUDA major has no floor to state."""
    assert min_driver("12.9", "speed") == MIN_DRIVER["12"]
    assert min_driver("12.9", "size") == {"linux": "550.54.14", "windows": "551.61"}
    assert min_driver("12.9", "balance") == min_driver("12.9", "size")
    assert min_driver("13.5", "size") == MIN_DRIVER["13"] == min_driver("13.5", "none")
    with pytest.raises(BuildError, match="CUDA 14"):
        min_driver("14.0", "size")


def test_a_release_is_one_overlay_per_architecture_the_ptx_with_the_newest() -> None:
    archs = ("120", "75", "80", "86", "89", "90", "100")
    split = families(archs, ("120",), per_arch=True)
    assert [family.label for family in split] == [
        "sm75",
        "sm80",
        "sm86",
        "sm89",
        "sm90",
        "sm100",
        "sm120",
    ]
    assert all(family.archs == (family.label[2:],) for family in split)
    assert [family.ptx_archs for family in split] == [()] * 6 + [("120",)]
    assert families(archs, ("120",), per_arch=False) == [ArchFamily("", archs, ("120",))]
    assert families(("75",), ("75",), per_arch=True) == [ArchFamily("", ("75",), ("75",))]


def test_the_families_of_a_release_share_one_runtime_archive(
    cuda_module: Path, cudart_wheel: Path, signing_keys: KeyPair, tmp_path: Path
) -> None:
    """The second family writes its own cuda-runtime manifest naming the first one's archive:
    the release carries (and compresses) the CUDA runtime once, and each index entry pins it."""
    out = tmp_path / "overlay"

    def family(label: str, shared: LayerManifest | None = None) -> list[Path]:
        return build_overlay(
            cuda_module,
            out,
            llama_cpp_version=LLAMA_CPP_VERSION,
            cuda_version="13.0",
            min_driver=TEST_DRIVER,
            min_vram_mb=1024,
            serial=7,
            overlay_version=f"0.3.36-cu13.0-{label}-7",
            signing_key_b64=signing_keys.private,
            runtime_wheels=[cudart_wheel],
            runtime_libraries=["libcudart.so.13"],
            compression_level=TEST_LEVEL,
            created=CREATED,
            release_version="0.3.36-cu13.0-7",
            shared_runtime=shared,
        )

    first = family("sm75")
    runtime_path = next(
        p for p in first if p.name == "cuda-runtime-0.3.36-cu13.0-sm75-7-linux_x86_64.json"
    )
    runtime = parse_manifest(runtime_path.read_bytes(), origin="test")
    assert runtime.archive.name == "cuda-runtime-0.3.36-cu13.0-7-linux_x86_64.tar.zst"
    second = family("sm80", runtime)
    assert not [
        path for path in second if path.name.endswith(".tar.zst") and "runtime" in path.name
    ]
    assert sorted(path.name for path in out.glob("cuda-runtime-*.tar.zst")) == [
        runtime.archive.name
    ]
    index, _ = release(
        out, tmp_path / "release", serial=8, base_url="", signing_key_b64=signing_keys.private
    )[-2:]
    entries = {entry.overlay_version: entry for entry in published_entries(index)}
    assert set(entries) == {"0.3.36-cu13.0-sm75-7", "0.3.36-cu13.0-sm80-7"}
    runtime_archives = {
        layer.archive
        for entry in entries.values()
        for layer in entry.layers
        if layer.layer == "cuda-runtime"
    }
    assert len(runtime_archives) == 1
    assert (tmp_path / "release" / runtime_archives.pop()).is_file()
