"""`/api/health` and `/api/capabilities`: is it up, and what did the bootstrap decide."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from llamaship.launch.outcome import BootState
from llamaship.measure.job import MeasurementJob
from llamaship.overlay.store import OverlayStore
from llamaship_backend.benchmark import benchmark_summary
from llamaship_backend.dependencies import get_boot_state, get_engine, get_measurement
from llamaship_backend.engine import Engine
from llamaship_backend.error_replies import ERROR_RESPONSES
from llamaship_backend.schemas import HealthReply
from llamaship_contract.capabilities import (
    Capabilities,
    DecisionInfo,
    LlamaCppInfo,
    ModelInfo,
    OverlayInfo,
    Recommendation,
)

router = APIRouter(responses=ERROR_RESPONSES)


def installed_overlay(state: BootState) -> str | None:
    """The version the overlay store has active (a read of its pointer), or None."""
    installed = OverlayStore(state.dirs).active()
    return None if installed is None else installed.overlay_version


@router.get("/api/health")
def health() -> HealthReply:
    """The server is up (the model may not be loaded yet)."""
    return HealthReply(status="ok")


@router.get("/api/capabilities")
def capabilities(
    state: Annotated[BootState, Depends(get_boot_state)],
    engine: Annotated[Engine, Depends(get_engine)],
    measurement: Annotated[MeasurementJob, Depends(get_measurement)],
) -> Capabilities:
    """The detection report, the cpu/cuda decision, the llama.cpp in use and the model."""
    model = engine.model
    return Capabilities(
        detection=state.report,
        gpus=state.report.gpus,
        decision=DecisionInfo(
            variant=state.decision, reason=state.reason, upgrade_available=state.upgrade_available
        ),
        llama_cpp=LlamaCppInfo(
            version=state.llama_cpp_version,
            variant=state.active_variant,
            gpu_offload=state.gpu_offload,
            path=str(state.llama_cpp_path),
            cpu_backend=state.cpu_backend,
        ),
        overlay=OverlayInfo(version=state.overlay_version, installed=installed_overlay(state)),
        recommendation=Recommendation(n_gpu_layers=state.n_gpu_layers, n_threads=state.n_threads),
        model=ModelInfo(
            id=engine.model_id, path=str(model) if model else None, loaded=engine.loaded
        ),
        load_plan=engine.plan,
        benchmark=benchmark_summary(state.dirs.state, engine.model_id),
        measurement=measurement.status(),
        events=tuple(state.events),
    )
