"""The bundle's trust root is a build input: the release bundle trusts exactly
runtime/llamaship/trusted_keys.json; a bundle for tests may add keys, but never in dist/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamaship_build.bundle import build_bundle, input_key
from llamaship_build.errors import BuildError
from llamaship_build.platforms import PLATFORMS
from llamaship_build.project import Project
from llamaship_build.spec import write_spec
from llamaship_contract.signing import generate_keypair

ROOT = Path(__file__).resolve().parents[1]


def _spec_keys(spec: Path) -> dict[str, list[str]]:
    line = next(
        line for line in spec.read_text().splitlines() if line.startswith("TRUSTED_KEYS = ")
    )
    keys: dict[str, list[str]] = json.loads(line.removeprefix("TRUSTED_KEYS = "))
    return keys


def test_release_spec_trusts_only_the_committed_keys(tmp_path: Path) -> None:
    committed = json.loads((ROOT / "runtime" / "llamaship" / "trusted_keys.json").read_text())
    spec = write_spec(Project.here(), PLATFORMS["linux"], tmp_path / "backend.spec")
    assert _spec_keys(spec) == {role: sorted(keys) for role, keys in committed.items()}


def test_test_spec_adds_the_extra_key_and_changes_the_input_key(tmp_path: Path) -> None:
    _, extra = generate_keypair()
    spec = write_spec(Project.here(), PLATFORMS["linux"], tmp_path / "backend.spec", [extra])
    assert extra in _spec_keys(spec)["release"]
    assert extra not in _spec_keys(spec)["index"]
    wheel = tmp_path / "llama.whl"
    wheel.write_bytes(b"stand-in wheel")
    plain = input_key(Project.here(), wheel)
    assert input_key(Project.here(), wheel, [extra]) != plain
    assert input_key(Project.here(), wheel) == plain


def test_a_bundle_with_extra_keys_never_goes_to_dist() -> None:
    _, extra = generate_keypair()
    with pytest.raises(BuildError, match="for tests only"):
        build_bundle(Project.here(), extra_trusted_keys=[extra])
