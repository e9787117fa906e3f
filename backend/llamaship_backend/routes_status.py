"""`/api/health` and `/api/capabilities`: is it up, and what did the bootstrap decide."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from llamaship.boot_state import BootState

from llamaship_backend.dependencies import get_boot_state, get_engine
from llamaship_backend.engine import Engine

router = APIRouter()


@router.get("/api/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/api/capabilities")
def capabilities(
    state: Annotated[BootState, Depends(get_boot_state)],
    engine: Annotated[Engine, Depends(get_engine)],
) -> dict[str, Any]:
    """The detection report, the cpu/cuda decision, the llama.cpp in use and the model."""
    model = state.settings.model
    return {
        "detection": state.report,
        "gpus": state.report.get("gpus", []),
        "decision": {
            "variant": state.decision,
            "reason": state.reason,
            "upgrade_available": state.upgrade_available,
        },
        "llama_cpp": {
            "version": state.llama_cpp_version,
            "variant": state.active_variant,
            "gpu_offload": state.gpu_offload,
            "path": str(state.llama_cpp_path),
            "cpu_backend": state.cpu_backend,
        },
        "overlay": {"version": state.overlay_version},
        "recommendation": {"n_gpu_layers": state.n_gpu_layers, "n_threads": state.n_threads},
        "model": {
            "id": engine.model_id,
            "path": str(model) if model else None,
            "loaded": engine.loaded,
        },
        "events": state.events,
    }
