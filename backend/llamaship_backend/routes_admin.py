"""`/api/admin/benchmark` (timed generation) and `/api/admin/restart` (202, then restart);
both need the admin token (`security.require_admin`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Depends

from llamaship.launch.outcome import BootState
from llamaship_backend.dependencies import get_boot_state, get_engine, get_restart
from llamaship_backend.engine import Engine
from llamaship_backend.error_replies import ERROR_RESPONSES
from llamaship_backend.errors import RestartUnavailable
from llamaship_backend.restart import RestartRequest
from llamaship_backend.schemas import BenchmarkReply, BenchmarkRequest, RestartReply
from llamaship_backend.security import require_admin

router = APIRouter(dependencies=[Depends(require_admin)], responses=ERROR_RESPONSES)


@router.post("/api/admin/benchmark")
def benchmark(
    state: Annotated[BootState, Depends(get_boot_state)],
    engine: Annotated[Engine, Depends(get_engine)],
    body: Annotated[BenchmarkRequest | None, Body()] = None,
) -> BenchmarkReply:
    """Load time and tokens/s with the active plan and on CPU (same build); also stored."""
    request = body or BenchmarkRequest()
    record = engine.benchmark(request.n_prompt, request.n_gen, cpu=request.cpu)
    fields = record.model_dump(by_alias=True)
    return BenchmarkReply.model_validate(
        {**fields, "summary": record.summary, "gpu_offload": state.gpu_offload}
    )


@router.post("/api/admin/restart", status_code=202)
def restart(
    state: Annotated[BootState, Depends(get_boot_state)],
    restart_request: Annotated[RestartRequest, Depends(get_restart)],
    background: BackgroundTasks,
) -> RestartReply:
    """Reply 202, then stop the server; `serve` restarts as `LLAMASHIP_RESTART` says."""
    if not restart_request.bound:
        msg = "This app is not run by llamaship_backend.server, which alone can restart it."
        raise RestartUnavailable(msg)
    background.add_task(restart_request.request)
    return RestartReply(status="restarting", mode=state.settings.restart)
