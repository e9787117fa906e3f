"""The `/api/capabilities` reply: what the launch decided and what the backend serves.

Each part is its own model so a new part is one optional field here (default None) plus the
route filling it in; clients ignore parts they do not know.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaship_contract.bench import BenchSummary
from llamaship_contract.detection import DetectionReport, GpuInfo
from llamaship_contract.document import Document
from llamaship_contract.fit import FitPlan
from llamaship_contract.measure import MeasurementStatus

Variant = Literal["cpu", "cuda", "vulkan"]


class DecisionInfo(Document):
    """The variant the launch chose, why, and whether a CUDA overlay upgrade is offered."""

    variant: Variant
    reason: str
    upgrade_available: bool


class LlamaCppInfo(Document):
    """The llama.cpp build in use."""

    version: str
    variant: Variant
    gpu_offload: bool
    path: str
    cpu_backend: str | None = None


class OverlayInfo(Document):
    """The CUDA overlay this launch runs, if any, and the one installed."""

    version: str | None = None
    installed: str | None = None
    """The overlay installed as active (`llamaship overlay status`), whether or not this launch
    runs it (the decision's reason says why not)."""


class Recommendation(Document):
    """The load settings the launch recommends (the user's settings where given)."""

    n_gpu_layers: int
    n_threads: int = Field(ge=1)


class ModelInfo(Document):
    """The configured model and whether it is loaded."""

    id: str | None = None
    path: str | None = None
    loaded: bool = False


class Capabilities(Document):
    """`GET /api/capabilities`."""

    detection: DetectionReport
    gpus: tuple[GpuInfo, ...]
    decision: DecisionInfo
    llama_cpp: LlamaCppInfo
    overlay: OverlayInfo
    recommendation: Recommendation
    model: ModelInfo
    load_plan: FitPlan | None = None
    """The plan the model was loaded with (after any out-of-memory back-off), and its reason."""
    benchmark: BenchSummary | None = None
    """The last benchmark of the configured model, if any."""
    measurement: MeasurementStatus | None = None
    """The GPU variant measured against the CPU build: in progress, done, or the cached result
    this launch followed."""
    events: tuple[str, ...] = ()
