"""`/api/admin/benchmark` (timed generation) and `/api/admin/restart` (202, then restart);
both need the admin token (`security.require_admin`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Depends

from llamaship.launch.outcome import BootState
from llamaship_backend.dependencies import get_boot_state, get_engine, get_restart
from llamaship_backend.engine import Engine
from llamaship_backend.errors import RestartUnavailable
from llamaship_backend.restart import RestartRequest
from llamaship_backend.schemas import BenchmarkRequest
from llamaship_backend.security import require_admin

router = APIRouter(dependencies=[Depends(require_admin)])


@router.post("/api/admin/benchmark")
def benchmark(
    state: Annotated[BootState, Depends(get_boot_state)],
    engine: Annotated[Engine, Depends(get_engine)],
    body: Annotated[BenchmarkRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Load time and tokens/s with the active plan and on CPU (same build); also stored."""
    request = body or BenchmarkRequest()
    record = engine.benchmark(request.n_prompt, request.n_gen, cpu=request.cpu)
    return {
        **record.model_dump(mode="json", by_alias=True),
        "summary": record.summary,
        "gpu_offload": state.gpu_offload,
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
