"""The bundle manifest (`dist/bundle-manifest.json`) that `nox -s bundle` writes beside the
archive: what was built, from what, and the archive's size and sha256."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaship_contract.document import StrictDocument
from llamaship_contract.overlay_fields import Sha256, Text


class BundleArchive(StrictDocument):
    """The bundle's archive file in `dist/`."""

    name: Text
    bytes: int = Field(ge=1)
    sha256: Sha256


class Component(StrictDocument):
    """One of the largest top-level parts of the unpacked bundle."""

    path: str
    bytes: int = Field(ge=0)


class BundleManifest(StrictDocument):
    """`bundle-manifest.json`: one CPU bundle of the `backend` executable."""

    name: Literal["backend"]
    version: Text
    variant: Literal["cpu"]
    platform: Text
    llama_cpp_python: Text
    python: Text
    pyinstaller: Text
    input_key: Text
    """Hash of everything that goes into the bundle: an equal key means nothing to rebuild."""
    toolchain: Text
    """Where the native parts were built: `debian11-clang16-py3.11.2` (a Debian 11 root) or
    `host` (the build machine itself)."""
    glibc_floor: str | None = None
    """Linux: the newest glibc any ELF file of the bundle needs (e.g. "2.31"); None elsewhere."""
    glibcxx_floor: str | None = None
    """Linux: the newest libstdc++ (`GLIBCXX_`) it needs from the system (e.g. "3.4.28")."""
    file_count: int = Field(ge=0)
    unpacked_bytes: int = Field(ge=0)
    largest_components: tuple[Component, ...]
    archive: BundleArchive
