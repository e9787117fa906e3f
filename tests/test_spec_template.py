"""The spec template renders deterministically from one context (golden file)."""

from pathlib import Path

import pytest

from llamaship_build.platforms import PLATFORMS
from llamaship_build.project import Project
from llamaship_build.spec import build_context, render_spec
from llamaship_contract.errors import LlamashipError
from llamaship_contract.trust import TrustedKeys

GOLDEN = Path(__file__).parent / "golden" / "backend-linux.spec"
KEYS = TrustedKeys(release=("b64-key-two", "b64-key-one"), index=("b64-index-key",))


def _render() -> str:
    project = Project.here()
    context = build_context(project, PLATFORMS["linux"], KEYS)
    context["version"] = "0.0.0-golden"
    return render_spec(project.templates, context)


def test_spec_matches_golden_file() -> None:
    assert _render() == GOLDEN.read_text()


def test_spec_is_deterministic_and_cpu_only() -> None:
    text = _render()
    assert text == _render()
    compile(text, "backend.spec", "exec")  # the values baked in are Python, not bare JSON
    assert "collect_all(" not in text
    assert '"torch"' in text and '"tensorflow"' in text and '"scipy"' in text
    assert "cuda" not in text.lower()
    assert ".gguf" not in text
    # keys are sorted, so the order they were found in does not matter
    assert text.index("b64-key-one") < text.index("b64-key-two")


def test_template_error_names_the_template(tmp_path: Path) -> None:
    (tmp_path / "backend.spec.j2").write_text("{{ missing_value }}")
    with pytest.raises(LlamashipError, match=r"backend\.spec\.j2"):
        render_spec(tmp_path, {})


def test_the_release_index_url_is_baked_in_like_the_trusted_keys() -> None:
    project = Project.here()
    url = "https://owner.github.io/llamaship/releases.json"
    text = render_spec(project.templates, build_context(project, PLATFORMS["linux"], KEYS, url))
    assert _baked_release(text) == {"release_url": url}
    assert '(os.path.join(keys_dir, "release.json"), "llamaship")' in text
    assert _baked_release(_render()) == {"release_url": None}  # local and test bundles: none


def _baked_release(spec: str) -> object:
    """What the spec's RELEASE line evaluates to, as PyInstaller runs it."""
    (line,) = [line for line in spec.splitlines() if line.startswith("RELEASE = ")]
    namespace: dict[str, object] = {}
    exec(f"import json\n{line}", namespace)
    return namespace["RELEASE"]
