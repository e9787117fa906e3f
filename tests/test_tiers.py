"""Test tiers: tests get the marker of the tier fixtures they use, and a selected tier whose
requirement is missing stops the run with a message, while deselecting it runs the rest."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiers import CUDA_FIXTURE_VARIABLE, TIERS, cuda_fixture_path

TESTS = Path(__file__).resolve().parent
PROJECT_TESTS = """
import pytest

@pytest.fixture
def cuda_wheel():
    from tiers import cuda_fixture_path
    return cuda_fixture_path()

@pytest.fixture
def built_overlay(cuda_wheel):
    return cuda_wheel

def test_uses_the_overlay(built_overlay):
    assert built_overlay.is_file()

@pytest.mark.root
def test_as_root():
    pass

def test_plain():
    pass
"""


def _pytest(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    markers = "\n".join(f"    {tier}: tier" for tier in TIERS)
    (tmp_path / "pytest.ini").write_text(
        f"[pytest]\naddopts = --strict-markers -p tiers -p no:cacheprovider\nmarkers =\n{markers}\n"
    )
    (tmp_path / "test_project.py").write_text(PROJECT_TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS), **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_selected_tier_without_its_fixture_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    result = _pytest(tmp_path, "-m", "not root", env={CUDA_FIXTURE_VARIABLE: "/nonexistent.whl"})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout
    assert (
        "tier 'cuda_fixture' is selected but LLAMASHIP_BUILD_CUDA_FIXTURE=/nonexistent.whl "
        "is not a file" in result.stderr
    )
    assert "-m 'not cuda_fixture'" in result.stderr


def test_a_tier_is_inferred_through_fixtures_and_can_be_deselected(tmp_path: Path) -> None:
    result = _pytest(
        tmp_path,
        "-m",
        "not (cuda_fixture or root)",
        env={CUDA_FIXTURE_VARIABLE: "/nonexistent.whl"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 2 deselected" in result.stdout


def test_the_fixture_location_comes_from_the_environment(tmp_path: Path) -> None:
    wheel = tmp_path / "cuda.whl"
    wheel.write_bytes(b"wheel")
    assert cuda_fixture_path({CUDA_FIXTURE_VARIABLE: str(wheel)}) == wheel
    result = _pytest(tmp_path, "-m", "cuda_fixture", env={CUDA_FIXTURE_VARIABLE: str(wheel)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 2 deselected" in result.stdout


def test_the_root_tier_needs_root(tmp_path: Path) -> None:
    result = _pytest(tmp_path, "-m", "root", env={})
    if sys.platform != "win32" and os.geteuid() == 0:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode == pytest.ExitCode.USAGE_ERROR
        assert "tier 'root' is selected but these tests chroot" in result.stderr
