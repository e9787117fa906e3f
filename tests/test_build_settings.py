"""The build's settings come from one place: `llamaship_build.settings`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llamaship_build.errors import BuildError
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


def test_the_release_index_url_setting(tmp_path: Path) -> None:
    from llamaship_build.release_location import pages_url, release_index_url

    assert BuildSettings.resolve({}).release_index_url is None
    pages = BuildSettings.resolve({"LLAMASHIP_BUILD_RELEASE_INDEX_URL": "pages"})
    assert pages.release_index_url == "pages"
    with pytest.raises(BuildError, match=r"LLAMASHIP_BUILD_RELEASE_INDEX_URL='http://x/r\.json'"):
        BuildSettings.resolve({"LLAMASHIP_BUILD_RELEASE_INDEX_URL": "http://x/r.json"})
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n')
    assert pages_url(pyproject) is None  # no [project.urls]: none is baked in
    assert release_index_url("pages", pyproject) is None
    pyproject.write_text(
        '[project]\nname = "x"\n[project.urls]\nDocs = "https://example.org"\n'
        'Source = "https://github.com/Some-Owner/llamaship.git"\n'
    )
    expected = "https://some-owner.github.io/llamaship/releases.json"
    assert release_index_url("pages", pyproject) == expected
    assert release_index_url("https://mirror.example/r.json", pyproject) == (
        "https://mirror.example/r.json"
    )
    assert release_index_url(None, pyproject) is None
