"""`create_app`: the FastAPI app over a boot state and an engine."""

from __future__ import annotations

from fastapi import FastAPI

from llamaship import __version__
from llamaship.launch.outcome import BootState
from llamaship.models.store import ModelStore
from llamaship_backend import (
    routes_admin,
    routes_models,
    routes_openai,
    routes_page,
    routes_settings,
    routes_status,
    routes_upgrade,
)
from llamaship_backend.dependencies import attach
from llamaship_backend.engine import Engine
from llamaship_backend.error_replies import install_error_replies
from llamaship_backend.security import RequestGuard


def create_app(
    state: BootState, engine: Engine, *, model_store: ModelStore | None = None
) -> FastAPI:
    """The backend app; `llamaship_backend.server.serve` runs it.

    `model_store`: the models `/api/models` lists and pulls (e.g. another catalogue); by
    default the bundled catalogue's under LLAMASHIP_HOME, created on first use."""
    app = routed_app()
    attach(app, state, engine)
    app.state.model_store = model_store
    # In front of routing: a refused request never reaches a route or has its body read.
    app.add_middleware(RequestGuard, configured_host=state.settings.host)
    return app


def routed_app() -> FastAPI:
    """The routes and error replies, with no boot state: what `llamaship openapi` describes."""
    app = FastAPI(title="llamaship backend", version=__version__, docs_url=None, redoc_url=None)
    install_error_replies(app)
    # Each API area is a router in its own module; new areas are added to this list.
    app.include_router(routes_status.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_upgrade.router)
    app.include_router(routes_models.router)
    app.include_router(routes_settings.router)
    app.include_router(routes_page.router)
    return app
