"""`python -m llamaship_build overlay|release`: source selection and the signed index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_overlay import BuiltOverlay
from llamaship_build.errors import BuildError
from llamaship_build.overlay_release import MIN_DRIVER, min_driver, release
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
