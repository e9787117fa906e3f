"""Overlay layer manifests and the release index, as the runtime reads them.

The documents are declared once in `llamaship_contract.overlay`; this module is the runtime's
name for them (parse the verified bytes, dump the canonical ones, derive requirements).
"""

from __future__ import annotations

from llamaship_contract.names import ARCHIVE_SUFFIX
from llamaship_contract.overlay import (
    FORMAT,
    LAYER_NAMES,
    LAYER_ROOTS,
    REQUIRED_LAYER,
    ArchiveRef,
    FileEntry,
    LayerManifest,
    OverlayRequirements,
    RequiredLayer,
    dump_manifest,
    layer_id,
    parse_manifest,
    requirements_for,
)
from llamaship_contract.overlay_fields import ManifestError, safe_relative_path
from llamaship_contract.release_index import (
    LayerRef,
    ReleaseEntry,
    ReleaseIndex,
    dump_index,
    parse_index,
)

__all__ = [
    "ARCHIVE_SUFFIX",
    "FORMAT",
    "LAYER_NAMES",
    "LAYER_ROOTS",
    "REQUIRED_LAYER",
    "ArchiveRef",
    "FileEntry",
    "LayerManifest",
    "LayerRef",
    "ManifestError",
    "OverlayRequirements",
    "ReleaseEntry",
    "ReleaseIndex",
    "RequiredLayer",
    "dump_index",
    "dump_manifest",
    "layer_id",
    "parse_index",
    "parse_manifest",
    "requirements_for",
    "safe_relative_path",
    "to_requirements",
]


def to_requirements(manifest: LayerManifest, os_name: str) -> OverlayRequirements:
    """What the overlay needs from this machine (`os_name`: 'linux' or 'windows')."""
    return requirements_for(manifest, os_name)
