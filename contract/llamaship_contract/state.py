"""State files the runtime keeps between launches: overlay pointers, quarantine, accepted serials
and the GPU detection cache.

They are written with `dump_document_pretty` and read with `parse_document`; a file that does
not validate is treated as absent by its reader (and the reason logged), never fatal.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field, model_validator

from llamaship_contract.detection import DetectionReport
from llamaship_contract.document import Document, StrictDocument
from llamaship_contract.overlay import LAYER_NAMES, OverlayRequirements, VulkanRequirements
from llamaship_contract.overlay_fields import Count, LayerId, Text, safe_relative_path

STATE_SCHEMA: Final = 1
ACTIVE_FILE = "active.json"
VULKAN_FILE = "vulkan.json"
PREVIOUS_FILE = "previous.json"
QUARANTINE_FILE = "quarantine.json"
ACCEPTED_SERIAL_FILE = "accepted_serial.json"
DETECTION_CACHE_FILE = ".gpu_detection_cache.json"


class OverlayPointer(StrictDocument):
    """`active.json` / `previous.json`: which layers make an overlay, and what it needs."""

    schema_: Literal[1] = Field(default=STATE_SCHEMA, alias="schema")
    overlay_version: Text
    serial: Count
    llama_cpp_version: Text
    layers: dict[str, LayerId]
    requirements: OverlayRequirements

    @model_validator(mode="after")
    def _each_layer_once(self) -> OverlayPointer:
        problems = [
            f"layers.{name}: {layer_id!r} is not a {name} layer id"
            for name, layer_id in self.layers.items()
            if not layer_id.startswith(f"{name}-")
        ]
        if sorted(self.layers) != sorted(LAYER_NAMES):
            problems.append(f"layers: must map each of {', '.join(LAYER_NAMES)} to its layer id")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class VulkanPointer(StrictDocument):
    """`vulkan.json`: the installed Vulkan overlay: its one layer, its backend module, its needs.

    It sits beside `active.json` (the CUDA overlay): the launch chooses between the variants.
    """

    schema_: Literal[1] = Field(default=STATE_SCHEMA, alias="schema")
    overlay_version: Text
    serial: Count
    llama_cpp_version: Text
    layer: LayerId
    module: Text
    """The backend module's path inside the layer (`backends/libggml-vulkan.so`)."""
    requirements: VulkanRequirements

    @model_validator(mode="after")
    def _module_in_backends(self) -> VulkanPointer:
        problems = []
        if not self.layer.startswith("llama-vulkan-"):
            problems.append(f"layer: {self.layer!r} is not a llama-vulkan layer id")
        if not self.module.startswith("backends/") or safe_relative_path(self.module):
            problems.append(f"module: {self.module!r} must be a path under backends/")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class QuarantineList(StrictDocument):
    """`quarantine.json`: overlay versions that must not be used, each with the reason."""

    schema_: Literal[1] = Field(default=STATE_SCHEMA, alias="schema")
    overlays: dict[str, str] = Field(default_factory=dict)


class AcceptedSerialsFile(StrictDocument):
    """`accepted_serial.json`: the newest index and manifest serials accepted (against replays)."""

    schema_: Literal[1] = Field(default=STATE_SCHEMA, alias="schema")
    index_serial: Count = 0
    manifest_serial: Count = 0


class DetectionCache(Document):
    """`.gpu_detection_cache.json`: a detection report and the fingerprint it is valid for.

    The fingerprint is opaque (compared with ==): cheap facts about the driver files and the
    versions of the bundle and overlay.
    """

    schema_: Literal[1] = Field(default=STATE_SCHEMA, alias="schema")
    fingerprint: dict[str, Any]
    report: DetectionReport
