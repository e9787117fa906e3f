"""The GPU detection report: the JSON other programs read (field names are a contract)."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from llamaship_contract.document import Document

REPORT_SCHEMA: Final = 1

Source = Literal["nvml", "nvidia-smi", "none"]
VulkanSource = Literal["loader", "none"]
VulkanDeviceType = Literal["discrete", "integrated", "virtual", "cpu", "other"]


class GpuInfo(Document):
    """One NVIDIA GPU as the driver describes it; memory in MiB."""

    index: int = Field(ge=0)
    name: str
    uuid: str
    vram_total_mb: int = Field(ge=0)
    vram_free_mb: int = Field(ge=0)
    compute_capability: str


class VulkanDevice(Document):
    """One Vulkan physical device, as the system's Vulkan loader lists it; memory in MiB.

    `index` is the device's place in the loader's list: the number `GGML_VK_VISIBLE_DEVICES`
    takes. `device_type` "cpu" is a software renderer (lavapipe, llvmpipe, SwiftShader).
    """

    index: int = Field(ge=0)
    name: str
    vendor_id: int = Field(ge=0)
    vendor: str | None = None
    device_id: int = Field(ge=0)
    device_type: VulkanDeviceType
    api_version: str
    driver_version: str
    memory_mb: int = Field(ge=0)
    memory_free_mb: int | None = Field(default=None, ge=0)


class VulkanReport(Document):
    """What the Vulkan loader reported (`source` "loader"), or why nothing (`errors`)."""

    source: VulkanSource = "none"
    loader_version: str | None = None
    devices: tuple[VulkanDevice, ...] = ()
    errors: tuple[str, ...] = ()


class DetectionReport(Document):
    """What the launch knows about the machine's GPUs: the NVIDIA driver's view and Vulkan's."""

    schema_: Literal[1] = Field(default=REPORT_SCHEMA, alias="schema")
    source: Source
    cached: bool = False
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    gpus: tuple[GpuInfo, ...] = ()
    errors: tuple[str, ...] = ()
    vulkan: VulkanReport = VulkanReport()


def none_report(errors: tuple[str, ...] | list[str] = ()) -> DetectionReport:
    """The report of a machine where no NVIDIA source found a GPU."""
    return DetectionReport(source="none", errors=tuple(errors))
