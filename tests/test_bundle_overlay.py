"""The overlay inside the real PyInstaller bundle: installed by the bundle's CLI or through
the upgrade API from a loopback server, then chosen at launch (after a restart).

The overlay replaces nothing: the installer's probe (a child of the frozen executable) runs the
bundle's own llama.cpp, whose ggml loads the `llama-cuda` layer's `libggml-cuda.so` (named by
GGML_BACKEND_PATH) with libcudart from the `cuda-runtime` layer: its record says so. Without a
GPU here a stub driver whose cuInit fails stands in (and a stand-in for the cuBLAS the test
layer leaves out), so the CUDA backend registers no device: the launch gets as far as that
device check and then runs the bundle's CPU build, without quarantining the overlay, and it
generates."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures_backend import admin_headers
from fixtures_release import Release, install_overlay
from hardware.fake_cuda import compile_failing_libcuda, compile_stand_in_cublas
from hardware.fakes import FakeHardware
from llamaship_build.launch import launched
from overlay_kit.server import OverlayServer

pytestmark = pytest.mark.slow


def _capabilities(url: str) -> dict[str, Any]:
    reply: dict[str, Any] = httpx.get(f"{url}/api/capabilities", timeout=30).json()
    return reply


def _generate(url: str) -> str:
    reply = httpx.post(
        f"{url}/v1/chat/completions",
        timeout=300,
        json={"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 6},
    )
    assert reply.status_code == 200, reply.text
    text: str = reply.json()["choices"][0]["message"]["content"]
    return text


def _failing_driver(machine: FakeHardware, cuda_module: Path) -> None:
    """A libcuda.so.1 whose cuInit fails, and a stand-in cuBLAS, on the machine's library path."""
    compile_stand_in_cublas(cuda_module, machine.lib_dir)
    compile_failing_libcuda(machine.lib_dir)


def _assert_the_bundles_ggml_loaded_the_layers_module(machine: FakeHardware) -> None:
    """The installer's probe ran the bundle's own llama.cpp, and its ggml loaded the layer's
    CUDA module (which found libcudart in the runtime layer and asked the stub driver)."""
    record = json.loads((machine.home / "state" / "probe.json").read_text())
    assert record["by"] == "install", record
    result = record["result"]
    layers = (machine.home / "overlays" / "layers").resolve()
    imported = Path(result["llama_cpp_path"]).resolve()
    assert "_internal" in imported.parts and not imported.is_relative_to(layers), result
    assert result["llama_cpp_version"] == "0.3.36"
    libraries = [Path(library).resolve() for library in result["libraries"]]
    for prefix in ("libllama.so", "libggml.so", "libggml-base.so"):  # resolved: maybe .so.0…
        found = [path for path in libraries if path.name.startswith(prefix)]
        assert found and all("_internal" in path.parts for path in found), result  # the bundle's
    (module,) = [path for path in libraries if path.name == "libggml-cuda.so"]
    assert module.is_relative_to(layers) and module.parent.name == "backends", result
    assert "CUDA" in result["backends"] and result["gpu_devices"] == [], result
    assert result["cuda_error"].startswith("ggml_cuda_init: failed to initialize CUDA"), result


def _assert_no_cuda_device(machine: FakeHardware, capabilities: dict[str, Any]) -> None:
    """The launch chose the overlay and got to its CUDA device check (no device here): it runs
    the bundle's own CPU build and quarantined nothing."""
    decision = capabilities["decision"]
    assert decision["variant"] == "cpu" and decision["upgrade_available"] is False, decision
    assert "CUDA reports no device: ggml_cuda_init: failed" in decision["reason"], decision
    assert capabilities["llama_cpp"]["variant"] == "cpu"
    assert "_internal" in Path(capabilities["llama_cpp"]["path"]).parts
    assert not any("quarantine" in event for event in capabilities["events"]), capabilities
    assert not (machine.home / "overlays" / "quarantine.json").exists()


def test_bundle_loads_the_module_of_the_overlay_installed_by_its_cli(
    bundle_executable: Path,
    gpu_machine: FakeHardware,
    overlay_release: Release,
    gemma_model: Path,
    cuda_module: Path,
) -> None:
    _failing_driver(gpu_machine, cuda_module)
    install_overlay(gpu_machine, overlay_release, str(bundle_executable))
    _assert_the_bundles_ggml_loaded_the_layers_module(gpu_machine)
    env = gpu_machine.env(
        LLAMASHIP_MODEL=str(gemma_model), LLAMACPP_N_THREADS="1", LLAMASHIP_N_CTX="512"
    )
    with launched([str(bundle_executable)], env, inherit_env=False) as backend:
        capabilities = _capabilities(backend.url)
        _assert_no_cuda_device(gpu_machine, capabilities)
        assert capabilities["llama_cpp"]["version"] == "0.3.36"
        assert _generate(backend.url).strip()


def _wait_for_restart(port_file: Path, old_url: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port = port_file.read_text().strip() if port_file.is_file() else ""
        url = f"http://127.0.0.1:{port}"
        if port and url != old_url:
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    raise AssertionError("the backend did not come back after the restart")


def test_bundle_upgrades_from_a_loopback_server_and_restarts_onto_the_overlay(
    bundle_executable: Path,
    gpu_machine: FakeHardware,
    overlay_release: Release,
    overlay_server: OverlayServer,
    gemma_model: Path,
    cuda_module: Path,
) -> None:
    _failing_driver(gpu_machine, cuda_module)
    for path in overlay_release.directory.iterdir():
        shutil.copy2(path, overlay_server.root / path.name)
    env = gpu_machine.env(
        LLAMASHIP_RELEASE_URL=f"{overlay_server.url}/releases.json",
        LLAMASHIP_MODEL=str(gemma_model),
        LLAMACPP_N_THREADS="1",
        LLAMASHIP_N_CTX="512",
    )
    with launched([str(bundle_executable)], env, inherit_env=False) as backend:
        before = _capabilities(backend.url)
        assert before["llama_cpp"]["variant"] == "cpu"
        assert before["decision"]["upgrade_available"] is True, before["decision"]

        admin = admin_headers(gpu_machine.home)
        started = httpx.post(f"{backend.url}/api/admin/upgrade-gpu", timeout=30, headers=admin)
        assert started.status_code == 202, started.text
        job_url = f"{backend.url}/api/admin/upgrade-gpu/{started.json()['job_id']}"
        job: dict[str, Any] = {"state": "running"}
        deadline = time.monotonic() + 300
        while job["state"] == "running" and time.monotonic() < deadline:
            job = httpx.get(job_url, timeout=30, headers=admin).json()
            time.sleep(0.2)
        assert job["state"] == "succeeded", job
        assert job["bytes_total"] > 0 and job["bytes_done"] == job["bytes_total"]
        assert job["restart_required"] is True

        restarted = httpx.post(f"{backend.url}/api/admin/restart", timeout=30, headers=admin)
        assert restarted.status_code == 202
        url = _wait_for_restart(backend.port_file, backend.url)
        after = _capabilities(url)
        _assert_the_bundles_ggml_loaded_the_layers_module(gpu_machine)
        _assert_no_cuda_device(gpu_machine, after)
        assert _generate(url).strip()
        assert backend.process.poll() is None  # exec kept the same process
