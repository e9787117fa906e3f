"""`llamaship serve` as a process: port discovery, signals, restart modes, a busy port."""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fixtures_backend import BackendProcess, admin_headers
from hardware.fakes import GTX_1060, FakeHardware
from llamaship_backend.restart import restart_command, restart_environment

LaunchBackend = Callable[..., BackendProcess]


def listening_line(port: int) -> str:
    return f"llamaship: listening on http://127.0.0.1:{port}"


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_announces_its_port_and_exits_0_on_a_signal(
    launch_backend: LaunchBackend, stop_signal: signal.Signals
) -> None:
    backend = launch_backend("--port", "0")
    port = backend.wait_for_port()
    backend.wait_for_line(listening_line(port))
    assert httpx.get(f"http://127.0.0.1:{port}/api/health").json() == {"status": "ok"}

    backend.process.send_signal(stop_signal)

    assert backend.wait() == 0, backend.stderr()
    assert not backend.port_file.exists()


def test_serve_options_override_the_environment(
    launch_backend: LaunchBackend, tmp_path: Path
) -> None:
    model = tmp_path / "chosen.gguf"
    model.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))  # a valid header: fails to load
    backend = launch_backend(
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--model",
        str(model),
        LLAMASHIP_MODEL=str(tmp_path / "from-env.gguf"),
    )
    url = f"http://127.0.0.1:{backend.wait_for_port()}"
    capabilities = httpx.get(f"{url}/api/capabilities").json()
    assert capabilities["model"]["path"] == str(model)
    assert capabilities["llama_cpp"]["variant"] == "cpu"
    assert capabilities["gpus"] == []
    reply = httpx.post(
        f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}
    )
    assert reply.status_code == 422  # the chosen file was loaded, not the environment's
    assert str(model) in reply.json()["error"]["message"]


def test_capabilities_report_what_the_boot_detected_and_decided(
    launch_backend: LaunchBackend, hardware: FakeHardware
) -> None:
    hardware.install_nvml()
    hardware.gpus = [GTX_1060]
    backend = launch_backend("--port", "0")
    url = f"http://127.0.0.1:{backend.wait_for_port()}"

    capabilities = httpx.get(f"{url}/api/capabilities").json()

    assert [gpu["name"] for gpu in capabilities["gpus"]] == [GTX_1060.name]
    assert capabilities["detection"]["source"] == "nvml"
    assert capabilities["detection"]["driver_version"] == hardware.driver_version
    assert capabilities["decision"]["variant"] == "cpu"  # no CUDA overlay installed
    assert capabilities["decision"]["reason"]
    assert capabilities["llama_cpp"]["variant"] == "cpu"
    assert capabilities["llama_cpp"]["cpu_backend"].startswith("libggml-cpu-")
    assert capabilities["overlay"] == {"version": None, "installed": None}


def test_restart_in_exit_mode_replies_202_then_exits_75(
    launch_backend: LaunchBackend, hardware: FakeHardware
) -> None:
    backend = launch_backend("--port", "0", LLAMASHIP_RESTART="exit")
    port = backend.wait_for_port()

    reply = httpx.post(
        f"http://127.0.0.1:{port}/api/admin/restart", headers=admin_headers(hardware.home)
    )

    assert reply.status_code == 202
    assert reply.json() == {"status": "restarting", "mode": "exit"}
    assert backend.wait() == 75, backend.stderr()


def test_restart_in_exec_mode_runs_the_same_process_again(
    launch_backend: LaunchBackend, hardware: FakeHardware
) -> None:
    backend = launch_backend("--port", "0")
    port = backend.wait_for_port()
    backend.wait_for_line(listening_line(port))

    reply = httpx.post(
        f"http://127.0.0.1:{port}/api/admin/restart", headers=admin_headers(hardware.home)
    )
    assert reply.status_code == 202
    assert reply.json() == {"status": "restarting", "mode": "exec"}

    backend.wait_for_line(f"uvicorn.error: Started server process [{backend.process.pid}]", count=2)
    new_port = backend.wait_for_port()
    backend.wait_for_line(listening_line(new_port), count=2 if new_port == port else 1)
    assert backend.process.poll() is None  # re-executed in place: the same pid lives on
    assert httpx.get(f"http://127.0.0.1:{new_port}/api/health").json() == {"status": "ok"}
    backend.process.send_signal(signal.SIGTERM)
    assert backend.wait() == 0, backend.stderr()


def test_a_busy_port_fails_with_a_message_naming_it(launch_backend: LaunchBackend) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        backend = launch_backend("--port", str(port))
        assert backend.wait() == 3
    assert f"Cannot listen on 127.0.0.1:{port}" in backend.stderr()
    assert "LLAMASHIP_PORT" in backend.stderr()


def test_an_invalid_port_option_is_a_configuration_error(launch_backend: LaunchBackend) -> None:
    backend = launch_backend("--port", "eighty")
    assert backend.wait() == 2
    assert "LLAMASHIP_PORT='eighty' is invalid" in backend.stderr()


def test_a_frozen_backend_restarts_without_repeating_its_executable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/app/backend")
    monkeypatch.setattr(sys, "argv", ["./backend", "serve", "--port", "0"])

    assert restart_command() == ["/opt/app/backend", "serve", "--port", "0"]
    assert restart_environment()["PYINSTALLER_RESET_ENVIRONMENT"] == "1"


def test_a_python_launch_restarts_with_the_interpreter_and_its_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-X", "utf8", "-m", "llamaship", "serve"])
    monkeypatch.delenv("PYINSTALLER_RESET_ENVIRONMENT", raising=False)

    assert restart_command() == [sys.executable, "-X", "utf8", "-m", "llamaship", "serve"]
    assert "PYINSTALLER_RESET_ENVIRONMENT" not in restart_environment()


def test_a_restart_starts_from_the_environment_before_the_launch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The launch named a CUDA overlay's module and runtime folder in the environment: the
    restarted process decides again without them (a CPU launch must not load the module),
    and what the user had set stays."""
    from llamaship.launch.activate import Loader, activate
    from llamaship.launch.launch_env import RECORD

    monkeypatch.delenv(RECORD, raising=False)  # this test's launch only
    module = tmp_path / "backends" / "libggml-cuda.so"
    module.parent.mkdir()
    module.write_bytes(b"\x7fELF")
    runtime = tmp_path / "lib"
    runtime.mkdir()
    monkeypatch.delenv("GGML_BACKEND_PATH", raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/user/lib")
    activate(module, runtime, Loader(system="linux", load=lambda path, mode: None))

    assert os.environ["GGML_BACKEND_PATH"] == str(module)
    assert os.environ["LD_LIBRARY_PATH"] == f"{runtime}:/opt/user/lib"
    restarted = restart_environment()
    assert "GGML_BACKEND_PATH" not in restarted
    assert restarted["LD_LIBRARY_PATH"] == "/opt/user/lib"
    assert RECORD not in restarted
