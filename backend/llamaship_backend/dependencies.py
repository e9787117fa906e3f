"""Typed access to what `create_app` stores on the app, for routes (`Depends`) and the server."""

from __future__ import annotations

from fastapi import FastAPI, Request

from llamaship import admin_token
from llamaship.launch.outcome import BootState
from llamaship.measure.job import MeasurementJob
from llamaship_backend.engine import Engine
from llamaship_backend.restart import RestartRequest


def attach(app: FastAPI, state: BootState, engine: Engine) -> None:
    """Store the boot state, the engine, the admin token (created on first use), a fresh
    restart link and the launch's GPU-variant measurement (started once serving) on `app`."""
    app.state.boot_state = state
    app.state.engine = engine
    app.state.admin_token = admin_token.read_or_create(state.dirs.home)
    app.state.restart = RestartRequest()
    app.state.measurement = MeasurementJob(
        state.measure, state.dirs, state.active_variant, cached=state.measurement
    )


def restart_of(app: FastAPI) -> RestartRequest:
    restart: RestartRequest = app.state.restart
    return restart


def measurement_of(app: FastAPI) -> MeasurementJob:
    job: MeasurementJob = app.state.measurement
    return job


def get_measurement(request: Request) -> MeasurementJob:
    return measurement_of(request.app)


def get_boot_state(request: Request) -> BootState:
    state: BootState = request.app.state.boot_state
    return state


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_restart(request: Request) -> RestartRequest:
    return restart_of(request.app)
