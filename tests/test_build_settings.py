"""The build's settings come from one place: `llamaship_build.settings`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llamaship_build.project import Project
from llamaship_build.settings import VARIABLES, BuildSettings
from llamaship_contract.signing import SIGNING_KEY_ENV

PACKAGE = Path(__file__).resolve().parents[1] / "packaging" / "llamaship_build"
# os.environ read for a LLAMASHIP_ name: environ["…"], environ.get("…"), "…" in os.environ.
_AD_HOC = re.compile(
    r'environ(?:\.get\(|\[)\s*"LLAMASHIP_|"LLAMASHIP_\w+"\s+(?:not\s+)?in\s+\w*environ'
)


class _Recording(dict[str, str]):
    """An environment that remembers which names were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_the_settings_read_every_build_variable_but_the_signing_key() -> None:
    env = _Recording()
    BuildSettings.resolve(env)
    assert env.asked == set(VARIABLES) - {SIGNING_KEY_ENV}
    assert SIGNING_KEY_ENV in VARIABLES


def test_no_other_build_module_reads_a_llamaship_variable() -> None:
    readers = [
        path.name
        for path in sorted(PACKAGE.glob("*.py"))
        if path.name != "settings.py" and _AD_HOC.search(path.read_text("utf-8"))
    ]
    assert readers == []
    assert _AD_HOC.search('os.environ.get("LLAMASHIP_X", "")')  # the pattern finds a read


def test_the_checkout_can_be_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert BuildSettings.resolve({"LLAMASHIP_BUILD_ROOT": str(tmp_path)}).root == tmp_path.resolve()
    monkeypatch.setenv("LLAMASHIP_BUILD_ROOT", str(tmp_path))
    assert Project.here().root == tmp_path.resolve()
    monkeypatch.delenv("LLAMASHIP_BUILD_ROOT")
    assert Project.here().root == PACKAGE.parents[1]
