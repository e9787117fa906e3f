"""`/api/models`: the catalogue and the installed models, pulls as background jobs, the choice.

- `GET /api/models`: every catalogue entry and installed file, which one is chosen and which
  one this process serves.
- `POST /api/models/pull` (admin): 202 + a job id; `GET /api/models/pull/{job_id}` (admin)
  polls it. Bad input (unknown name, unverified model without a hash) is refused at once. With
  `"use": true` the job then chooses the model and serves it, as `use` does: one call from
  nothing to a model in use.
- `POST /api/models/use` (admin): save the choice in settings.json and serve it now: the engine
  loads it in this process (`restart_required` is false once it did).

Hub files are verified against the sha256 the hub publishes (`LLAMASHIP_HUB_URL`).
"""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from llamaship.launch.outcome import BootState
from llamaship.models.hub import Hub
from llamaship.models.jobs import PullJobs
from llamaship.models.store import (
    InstalledModel,
    ModelError,
    ModelNotInstalled,
    ModelStore,
    UnknownModel,
    UnverifiedModel,
)
from llamaship_backend.dependencies import get_engine
from llamaship_backend.engine import Engine
from llamaship_backend.error_replies import ERROR_RESPONSES
from llamaship_backend.errors import BackendError
from llamaship_backend.schemas import (
    JobStarted,
    ModelChoice,
    ModelListing,
    ModelsReply,
    PullBody,
    PullJobProgress,
    UseBody,
)
from llamaship_backend.security import require_admin

router = APIRouter(responses=ERROR_RESPONSES)
_state_lock = threading.Lock()


class ModelRequestInvalid(BackendError):
    """The model request cannot be done as asked (e.g. a malformed hash or URL)."""

    code = "model_request_invalid"


class ModelNotFound(BackendError):
    """The name is not in the catalogue, or the model is not installed."""

    status_code = 404
    code = "model_not_found"


class ModelUnverified(BackendError):
    """The model has no known sha256 and the request neither gave one nor accepted that."""

    status_code = 409
    code = "model_unverified"


class PullJobNotFound(BackendError):
    """The job id is unknown (never started, or forgotten after newer jobs)."""

    status_code = 404
    code = "pull_job_not_found"


def get_model_store(request: Request) -> ModelStore:
    """The app's model store (`create_app(model_store=...)`, else the bundled catalogue's under
    LLAMASHIP_HOME, created on first use)."""
    with _state_lock:
        store: ModelStore | None = getattr(request.app.state, "model_store", None)
        if store is None:
            state: BootState = request.app.state.boot_state
            settings = state.settings
            hub = Hub(settings.hub_url, allow_http=settings.hub_allow_http)
            store = ModelStore(state.dirs.home, hub=hub)
            request.app.state.model_store = store
        return store


def get_pull_jobs(request: Request) -> PullJobs:
    """The app's pull jobs, created on first use."""
    with _state_lock:
        jobs: PullJobs | None = getattr(request.app.state, "pull_jobs", None)
        if jobs is None:
            jobs = PullJobs()
            request.app.state.pull_jobs = jobs
        return jobs


def _refusal(error: ModelError) -> BackendError:
    if isinstance(error, UnknownModel | ModelNotInstalled):
        return ModelNotFound(str(error))
    if isinstance(error, UnverifiedModel):
        return ModelUnverified(str(error))
    return ModelRequestInvalid(str(error))


def _serve(store: ModelStore, engine: Engine, model: InstalledModel) -> None:
    """Load `model` in this process, then save it as the choice (settings.json): a model that
    does not load is not chosen."""
    engine.switch_to(model.path)
    store.use(model.path.name)


@router.get("/api/models")
def list_models(
    engine: Annotated[Engine, Depends(get_engine)],
    store: Annotated[ModelStore, Depends(get_model_store)],
) -> ModelsReply:
    """The catalogue and the installed models; `active`: the chosen file (settings.json);
    `serving`: the model file this process serves now."""
    installed = {model.path.name: model for model in store.installed()}
    active = store.active()
    models = []
    for entry in store.catalogue.models:
        model = installed.pop(entry.file_name, None)
        models.append(
            ModelListing(
                **entry.model_dump(mode="json", exclude={"hash_from"}),
                in_catalogue=True,
                installed=model is not None,
                installed_size=None if model is None else model.size,
                active=entry.file_name == active,
            )
        )
    for model in installed.values():
        models.append(
            ModelListing(
                name=model.name,
                file_name=model.path.name,
                url=None,
                size=None,
                sha256=None,
                license=None,
                purpose=None,
                context_length=None,
                min_ram_mb=None,
                unverified=True,
                in_catalogue=False,
                installed=True,
                installed_size=model.size,
                active=model.path.name == active,
            )
        )
    serving = engine.model
    try:
        default_chat: str | None = store.default_chat().name
    except UnknownModel:
        default_chat = None
    return ModelsReply(
        models_dir=str(store.dir),
        active=active,
        serving=None if serving is None else str(serving),
        default_chat=default_chat,
        models=models,
    )


@router.post("/api/models/pull", status_code=202, dependencies=[Depends(require_admin)])
def start_pull(
    body: PullBody,
    store: Annotated[ModelStore, Depends(get_model_store)],
    jobs: Annotated[PullJobs, Depends(get_pull_jobs)],
    engine: Annotated[Engine, Depends(get_engine)],
) -> JobStarted:
    """Start pulling a model (`use`: then serve it); poll the job id. While that file is being
    pulled, the running job's id."""
    try:
        source = store.source(body.name, body.sha256, body.accept_unverified)
    except ModelError as error:
        raise _refusal(error) from None

    def serve(model: InstalledModel) -> str:
        _serve(store, engine, model)
        return f"{model.name} is verified and in use ({model.path})"

    return JobStarted(job_id=jobs.start(store, source, serve if body.use else None))


@router.get("/api/models/pull/{job_id}", dependencies=[Depends(require_admin)])
def pull_progress(
    job_id: str,
    jobs: Annotated[PullJobs, Depends(get_pull_jobs)],
) -> PullJobProgress:
    """The job's state (running|succeeded|failed), bytes done and total, and message."""
    progress = jobs.get(job_id)
    if progress is None:
        msg = f"No model pull job {job_id[:100]!r}: start one with POST /api/models/pull."
        raise PullJobNotFound(msg)
    return PullJobProgress.model_validate(progress)


@router.post("/api/models/use", dependencies=[Depends(require_admin)])
def use_model(
    body: UseBody,
    engine: Annotated[Engine, Depends(get_engine)],
    store: Annotated[ModelStore, Depends(get_model_store)],
) -> ModelChoice:
    """Choose an installed model (settings.json) and serve it now (loaded in this process)."""
    try:
        model = store.find_installed(body.name)
    except ModelError as error:
        raise _refusal(error) from None
    _serve(store, engine, model)
    return ModelChoice(
        active=model.path.name,
        name=model.name,
        path=str(model.path),
        restart_required=engine.model != model.path,
    )
