"""The devices a plan places layers on, CUDA or Vulkan alike, and where they come from.

The planner sees a `FitDevice` list, not a vendor's structures: an adapter turns each section
of the detection report into devices of one backend (`nvidia_devices` for CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


def devices_for(variant: str, report: DetectionReport) -> tuple[FitDevice, ...]:
    """The devices the build `variant` runs on, from the detection report; none for the CPU."""
    if variant == "cuda":
        return nvidia_devices(report)
    return ()
