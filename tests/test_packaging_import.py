"""`import packaging` must be PyPA's library, never the repo's packaging/ folder."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_packaging_resolves_to_installed_library_from_repo_root() -> None:
    code = "import packaging, packaging.version; print(packaging.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    location = Path(result.stdout.strip())
    assert "site-packages" in location.parts
    assert not location.is_relative_to(ROOT / "packaging")


def test_packaging_folder_is_not_a_regular_package() -> None:
    assert not (ROOT / "packaging" / "__init__.py").exists()
