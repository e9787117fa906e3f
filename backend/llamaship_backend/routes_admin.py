"""`/api/admin/benchmark` (timed generation) and `/api/admin/restart` (202, then restart)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Depends
from llamaship.boot_state import BootState

from llamaship_backend.dependencies import get_boot_state, get_engine, get_restart
from llamaship_backend.engine import Engine
from llamaship_backend.errors import RestartUnavailable
from llamaship_backend.restart import RestartRequest
from llamaship_backend.schemas import BenchmarkRequest

router = APIRouter()


@router.post("/api/admin/benchmark")
def benchmark(
    state: Annotated[BootState, Depends(get_boot_state)],
    engine: Annotated[Engine, Depends(get_engine)],
    body: Annotated[BenchmarkRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Tokens per second of the loaded model with the llama.cpp build and offload in use."""
    result = engine.benchmark((body or BenchmarkRequest()).n_tokens)
    return {
        **asdict(result),
        "variant": state.active_variant,
        "gpu_offload": state.gpu_offload,
        "n_gpu_layers": state.n_gpu_layers,
        "n_threads": state.n_threads,
    }


@router.post("/api/admin/restart", status_code=202)
def restart(
    state: Annotated[BootState, Depends(get_boot_state)],
    restart_request: Annotated[RestartRequest, Depends(get_restart)],
    background: BackgroundTasks,
) -> dict[str, str]:
    """Reply 202, then stop the server; `serve` restarts as `LLAMASHIP_RESTART` says."""
    if not restart_request.bound:
        msg = "This app is not run by llamaship_backend.server, which alone can restart it."
        raise RestartUnavailable(msg)
    background.add_task(restart_request.request)
    return {"status": "restarting", "mode": state.settings.restart}
