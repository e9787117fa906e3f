"""`create_app`: the FastAPI app over a boot state and an engine."""

from __future__ import annotations

from fastapi import FastAPI
from llamaship import __version__
from llamaship.boot_state import BootState

from llamaship_backend import routes_admin, routes_openai, routes_status, routes_upgrade
from llamaship_backend.dependencies import attach
from llamaship_backend.engine import Engine
from llamaship_backend.error_replies import install_error_replies


def create_app(state: BootState, engine: Engine) -> FastAPI:
    """The backend app; `llamaship_backend.server.serve` runs it."""
    app = FastAPI(title="llamaship backend", version=__version__, docs_url=None, redoc_url=None)
    attach(app, state, engine)
    install_error_replies(app)
    # Each API area is a router in its own module; new areas are added to this list.
    app.include_router(routes_status.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_upgrade.router)
    return app
