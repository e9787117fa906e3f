"""The GPU detection report: the JSON other programs read (field names are a contract)."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from llamaship_contract.document import Document

REPORT_SCHEMA: Final = 1

Source = Literal["nvml", "nvidia-smi", "none"]


class GpuInfo(Document):
    """One NVIDIA GPU as the driver describes it; memory in MiB."""

    index: int = Field(ge=0)
    name: str
    uuid: str
    vram_total_mb: int = Field(ge=0)
    vram_free_mb: int = Field(ge=0)
    compute_capability: str


class DetectionReport(Document):
    """What the launch knows about the machine's NVIDIA driver and GPUs."""

    schema_: Literal[1] = Field(default=REPORT_SCHEMA, alias="schema")
    source: Source
    cached: bool = False
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    gpus: tuple[GpuInfo, ...] = ()
    errors: tuple[str, ...] = ()


def none_report(errors: tuple[str, ...] | list[str] = ()) -> DetectionReport:
    """The report of a machine where no source found a GPU."""
    return DetectionReport(source="none", errors=tuple(errors))
