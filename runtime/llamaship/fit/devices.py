"""The devices a plan places layers on, CUDA or Vulkan alike, and where they come from.

The planner sees a `FitDevice` list, not a vendor's structures: an adapter turns each section
of the detection report into devices of one backend (`nvidia_devices` for CUDA).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from llamaship.detect.vulkan_choice import VISIBLE_DEVICES
from llamaship_contract.detection import DetectionReport

Backend = Literal["cuda", "vulkan"]
BACKENDS: tuple[Backend, ...] = ("cuda", "vulkan")
BACKEND_LABELS: dict[str, str] = {"cuda": "CUDA", "vulkan": "Vulkan"}


@dataclass(frozen=True)
class FitDevice:
    """One device as the planner sees it: its backend's order (CUDA0, Vulkan0...), memory in MiB."""

    index: int
    name: str
    free_mb: int
    total_mb: int
    backend: Backend
    uuid: str | None = None

    @property
    def identity(self) -> str:
        """What names this device in the fit cache's key: its UUID, else backend, index, name."""
        return self.uuid if self.uuid is not None else f"{self.backend}:{self.index}:{self.name}"


def nvidia_devices(report: DetectionReport) -> tuple[FitDevice, ...]:
    """The NVIDIA GPUs of the detection report, as CUDA devices."""
    return tuple(
        FitDevice(
            index=gpu.index,
            name=gpu.name,
            free_mb=gpu.vram_free_mb,
            total_mb=gpu.vram_total_mb,
            backend="cuda",
            uuid=gpu.uuid,
        )
        for gpu in report.gpus
    )


def vulkan_devices(report: DetectionReport, visible: str | None) -> tuple[FitDevice, ...]:
    """The Vulkan devices ggml sees with `GGML_VK_VISIBLE_DEVICES=visible` (loader indices,
    comma-separated), renumbered as ggml does (Vulkan0...); none when nothing is visible."""
    by_index = {device.index: device for device in report.vulkan.devices}
    chosen = [int(part) for part in (visible or "").split(",") if part.strip().isdigit()]
    return tuple(
        FitDevice(
            index=position,
            name=by_index[index].name,
            free_mb=by_index[index].memory_free_mb or by_index[index].memory_mb,
            total_mb=by_index[index].memory_mb,
            backend="vulkan",
        )
        for position, index in enumerate(index for index in chosen if index in by_index)
    )


def devices_for(variant: str, report: DetectionReport) -> tuple[FitDevice, ...]:
    """The devices the build `variant` runs on, from the detection report; none for the CPU.

    Vulkan: the devices this process's llama.cpp sees (the launch sets GGML_VK_VISIBLE_DEVICES
    to the chosen one before anything loads llama.cpp)."""
    if variant == "cuda":
        return nvidia_devices(report)
    if variant == "vulkan":
        return vulkan_devices(report, os.environ.get(VISIBLE_DEVICES))
    return ()
