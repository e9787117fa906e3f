"""Every contract document by name: what `nox -s schemas` exports to docs/schemas/.

Add a document here when you declare it; the export and its staleness test follow.
"""

from __future__ import annotations

import json
from pathlib import Path

from llamaship_contract.bench import BenchRecord
from llamaship_contract.bundle import BundleManifest
from llamaship_contract.capabilities import Capabilities
from llamaship_contract.detection import DetectionReport
from llamaship_contract.document import Document
from llamaship_contract.fit import FitCacheRecord, FitPlan
from llamaship_contract.launch import BootCount, LaunchStatus, ProbeRecord
from llamaship_contract.measure import VariantMeasurement
from llamaship_contract.models import ModelCatalogue, UserSettings
from llamaship_contract.overlay import LayerManifest
from llamaship_contract.release_index import ReleaseIndex, ReleaseList
from llamaship_contract.state import (
    AcceptedSerialsFile,
    DetectionCache,
    OverlayPointer,
    QuarantineList,
    VulkanPointer,
)

DOCUMENTS: dict[str, type[Document]] = {
    "bench-record": BenchRecord,
    "boot-count": BootCount,
    "launch-status": LaunchStatus,
    "probe-record": ProbeRecord,
    "detection-report": DetectionReport,
    "layer-manifest": LayerManifest,
    "release-index": ReleaseIndex,
    "release-list": ReleaseList,
    "bundle-manifest": BundleManifest,
    "capabilities": Capabilities,
    "overlay-pointer": OverlayPointer,
    "vulkan-pointer": VulkanPointer,
    "quarantine": QuarantineList,
    "accepted-serials": AcceptedSerialsFile,
    "detection-cache": DetectionCache,
    "fit-cache-record": FitCacheRecord,
    "fit-plan": FitPlan,
    "model-catalogue": ModelCatalogue,
    "user-settings": UserSettings,
    "variant-measurement": VariantMeasurement,
}


def schema_text(model: type[Document]) -> str:
    """The JSON Schema of `model`, as the exported file holds it."""
    return json.dumps(model.model_json_schema(mode="validation"), indent=2, sort_keys=True) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> text of every schema file docs/schemas/ must hold."""
    return {f"{name}.schema.json": schema_text(model) for name, model in sorted(DOCUMENTS.items())}


def stale_files(directory: Path) -> list[str]:
    """Schema files in `directory` that are missing, different or no longer declared."""
    expected = expected_files()
    present = (
        {path.name for path in directory.glob("*.schema.json")} if directory.is_dir() else set()
    )
    stale = [
        name
        for name, text in expected.items()
        if name not in present or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(stale + sorted(present - set(expected)))


def export(directory: Path) -> list[str]:
    """Write every schema file into `directory`, remove undeclared ones; the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = expected_files()
    for path in directory.glob("*.schema.json"):
        if path.name not in expected:
            path.unlink()
    for name, text in expected.items():
        (directory / name).write_text(text, encoding="utf-8")
    return sorted(expected)
