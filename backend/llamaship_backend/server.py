"""Run the backend: uvicorn on the configured address until a signal or a restart request.

Once it accepts connections it logs `llamaship: listening on http://HOST:PORT` (the real
port, also when LLAMASHIP_PORT=0), writes the port to LLAMASHIP_PORT_FILE if that is set,
then calls `on_listening`. SIGTERM and SIGINT shut it down gracefully with exit status 0.
It listens on 127.0.0.1 unless LLAMASHIP_HOST (`--host`) says otherwise; any other address is
announced with a warning (docs/security.md).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from llamaship.admin_token import token_path
from llamaship.launch.outcome import BootState
from llamaship.models.store import ModelStore
from llamaship.settings_page import base_url, page_url
from llamaship_backend.app import create_app
from llamaship_backend.dependencies import measurement_of, restart_of
from llamaship_backend.engine import Engine
from llamaship_backend.restart import RESTART_EXIT_CODE, exec_restart
from llamaship_backend.security import is_loopback
from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus

logger = logging.getLogger(__name__)
# The "listening" line is read by people and supervisors: it goes out under the name "llamaship".
announce = logging.getLogger("llamaship")
# The settings page's address carries the admin token: only to a terminal, never the log file.
page_announce = logging.getLogger("llamaship.page")


def announce_page(base: str, token: str) -> None:
    """Say where the settings page is, as Jupyter does: with the token when stderr is a
    terminal (a person reads it there); without it when stderr is captured (a supervisor, a
    log file), naming `llamaship open` instead."""
    if not page_announce.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("llamaship: %(message)s"))
        page_announce.addHandler(handler)
        page_announce.propagate = False
        page_announce.setLevel(logging.INFO)
    if sys.stderr is not None and sys.stderr.isatty():
        page_announce.info("settings page (keep this address private): %s", page_url(base, token))
    else:
        page_announce.info("settings page: %s/settings (`llamaship open` opens it)", base)


GRACEFUL_SHUTDOWN_SECONDS = 5


class AddressUnavailable(LlamashipError):
    """The configured host/port cannot be bound."""

    exit_code = ExitStatus.BIND


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free port the system picks)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        msg = (
            f"Cannot listen on {host}:{port} ({error.strerror or error}): another program may "
            "use that port; set LLAMASHIP_PORT (or --port) to a free port, or 0 for any."
        )
        raise AddressUnavailable(msg) from None


def write_port_file(path: Path, port: int) -> None:
    """Write `port` to `path` atomically: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n", encoding="ascii")
    os.replace(temporary, path)


def remove_port_file(path: Path, port: int) -> None:
    """Remove the port file unless another process has written its own port there since."""
    try:
        if path.read_text(encoding="ascii").strip() == str(port):
            path.unlink()
    except FileNotFoundError:
        pass


def listening_url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class BackendServer(uvicorn.Server):
    """uvicorn on a socket bound beforehand, reporting once it accepts connections."""

    def __init__(
        self, app: FastAPI, listener: socket.socket, on_started: Callable[[], None]
    ) -> None:
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        super().__init__(config)
        self.listener = listener
        self._on_started = on_started
        self._measurement = measurement_of(app)
        restart_of(app).bind(self.stop)

    def stop(self) -> None:
        """Begin a graceful shutdown (safe from any thread)."""
        self.should_exit = True

    def run_until_stopped(self) -> None:
        self.run(sockets=[self.listener])

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._on_started()
            # A usable but unmeasured GPU variant: measured in child processes while this serves.
            self._measurement.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._measurement.stop()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises a caught SIGTERM/SIGINT after shutting down, so the process would
        # end by the signal; llamaship treats them as a request to stop and exits with 0.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def serve(
    state: BootState,
    on_listening: Callable[[], None],
    *,
    model_store: ModelStore | None = None,
) -> int:
    """Serve until stopped; returns the exit status (or re-executes itself on restart).

    `model_store`: the models the app lists and pulls (default: the bundled catalogue's)."""
    settings = state.settings
    engine = Engine(state)
    app = create_app(state, engine, model_store=model_store)
    listener = bind_listener(settings.host, settings.port)
    url = listening_url(listener)
    port = listener.getsockname()[1]

    def started() -> None:
        announce.info("listening on %s", url)
        announce_page(base_url(settings.host, port), app.state.admin_token)
        if not is_loopback(settings.host.strip("[]").lower()):
            announce.warning(
                "listening on %s: any machine on the network can reach the API; admin calls "
                "still need the token in %s",
                settings.host,
                token_path(settings.home),
            )
        if settings.port_file is not None:
            write_port_file(settings.port_file, port)
        on_listening()

    server = BackendServer(app, listener, started)
    try:
        server.run_until_stopped()
    finally:
        engine.close()
        listener.close()
        if settings.port_file is not None:
            remove_port_file(settings.port_file, port)
    if not restart_of(app).requested:
        return 0
    if settings.restart == "exit":
        logger.info("restart requested: exiting with %d for the supervisor", RESTART_EXIT_CODE)
        return RESTART_EXIT_CODE
    return exec_restart()
