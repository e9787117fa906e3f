"""Render templates/backend.spec.j2 into the PyInstaller spec of the `backend` executable."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from llamaship_build.errors import BuildError
from llamaship_build.fit_tool import BUNDLE_FILES
from llamaship_build.platforms import TargetPlatform
from llamaship_build.project import Project
from llamaship_contract.signing import SigningKeyError
from llamaship_contract.trust import TrustedKeys, parse_trusted_keys

TEMPLATE = "backend.spec.j2"
ENTRY_SCRIPT = "packaging/pyinstaller/backend_entry.py"
# Heavy frameworks that must never be pulled in by an optional import somewhere.
# zstandard's cffi backend duplicates its C backend (12 MB unstripped).
EXCLUDES = (
    "IPython",
    "PyInstaller",
    "llamaship_build",
    "matplotlib",
    "pytest",
    "scipy",
    "tensorflow",
    "tkinter",
    "torch",
    "zstandard._cffi",
    "zstandard.backend_cffi",
)
HIDDEN_IMPORT_PACKAGES = ("llamaship", "llamaship_backend", "llamaship_contract")
# PyNaCl's compiled _sodium imports cffi's backend from C.
HIDDEN_IMPORTS = ("_cffi_backend",)
# Package data files (source in the checkout, package directory in the bundle).
PACKAGE_DATA = (
    ("runtime/llamaship/models/catalogue.json", "llamaship/models"),
    ("backend/llamaship_backend/static", "llamaship_backend/static"),
)
# Distributions whose metadata the bundle reads at run time (importlib.metadata.version).
METADATA_OF = ("llama_cpp_python", "llamaship")


def trusted_keys(project: Project) -> TrustedKeys:
    """The public keys by role shipped in the source tree (runtime/llamaship/trusted_keys.json)."""
    path = project.trusted_keys_file
    try:
        return parse_trusted_keys(path.read_bytes(), str(path))
    except OSError as error:
        msg = f"cannot read the trusted public keys from {path}: {error.strerror or error}"
        raise BuildError(msg) from None
    except SigningKeyError as error:
        raise BuildError(str(error)) from None


def build_context(
    project: Project, target: TargetPlatform, keys: TrustedKeys, release_url: str | None = None
) -> dict[str, Any]:
    """The one context the spec template is rendered from (sorted, no timestamps);
    `release_url`: the release index baked in (`release_location`)."""
    return {
        "name": "backend",
        "variant": "cpu",
        "platform": target.name,
        "entry_script": ENTRY_SCRIPT,
        "llama_libraries": list(target.llama_libraries),
        "fit_tool_files": list(BUNDLE_FILES.get(target.name, ())),
        "excludes": sorted(EXCLUDES),
        "system_libraries": list(target.system_libraries),
        "hidden_import_packages": list(HIDDEN_IMPORT_PACKAGES),
        "hidden_imports": list(HIDDEN_IMPORTS),
        "metadata_of": list(METADATA_OF),
        "package_data": [list(item) for item in PACKAGE_DATA],
        "trusted_keys": {"index": sorted(keys.index), "release": sorted(keys.release)},
        "release": {"release_url": release_url},
        "version": project.version(),
    }


def render_spec(templates: Path, context: dict[str, Any]) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    try:
        return environment.get_template(TEMPLATE).render(context)
    except jinja2.TemplateError as error:
        msg = f"cannot render {templates / TEMPLATE}: {error}"
        raise BuildError(msg) from None


def write_spec(
    project: Project,
    target: TargetPlatform,
    out: Path,
    extra_trusted_keys: Sequence[str] = (),
    release_url: str | None = None,
) -> Path:
    """Render the spec; `extra_trusted_keys` (test bundles only) join the release keys;
    `release_url` is the release index baked in (release bundles only)."""
    shipped = trusted_keys(project)
    keys = TrustedKeys(
        release=tuple(sorted({*shipped.release, *extra_trusted_keys})), index=shipped.index
    )
    text = render_spec(project.templates, build_context(project, target, keys, release_url))
    out.write_text(text)
    return out
