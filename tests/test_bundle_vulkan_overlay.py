"""The Vulkan overlay in the real PyInstaller bundle, on a real Vulkan device (Mesa's lavapipe):
installed from a signed release by the bundle's own CLI, chosen at launch only when the user
names the software device, offloading a model's layers to it, and measured against the CPU
build, which wins on lavapipe and is then kept, with the numbers said.

Lavapipe is slow: the model is a tiny generated GGUF.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures_release import Release
from hardware.fakes import FakeHardware
from llamaship_build.gguf_models import Shape, write_llama_gguf
from llamaship_build.launch import launched
from llamaship_contract.names import ADMIN_TOKEN_NAME

pytestmark = [pytest.mark.slow, pytest.mark.root]

LAVAPIPE = "LLAMASHIP_VULKAN_DEVICE"  # naming the software device is the explicit consent


@pytest.fixture
def lavapipe(hardware: FakeHardware) -> FakeHardware:
    """This machine as it is: no NVIDIA driver, the system's Vulkan loader and lavapipe."""
    hardware.system_vulkan = True
    return hardware


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("model") / "tiny.gguf", Shape())


def _install(bundle: Path, machine: FakeHardware, release: Release, **env: str) -> Any:
    return subprocess.run(
        [str(bundle), "overlay", "install", str(release.directory), "--kind", "vulkan"],
        env=machine.env(**env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _capabilities(url: str) -> dict[str, Any]:
    reply: dict[str, Any] = httpx.get(f"{url}/api/capabilities", timeout=60).json()
    return reply


def _generate(url: str) -> dict[str, Any]:
    reply = httpx.post(
        f"{url}/v1/chat/completions",
        timeout=600,
        json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4},
    )
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def _launch_env(machine: FakeHardware, model: Path, **extra: str) -> Mapping[str, str]:
    return machine.env(
        LLAMASHIP_MODEL=str(model),
        LLAMACPP_N_THREADS="2",
        LLAMASHIP_N_CTX="256",
        LLAMACPP_VERBOSE="true",
        **extra,
    )


def test_the_bundle_runs_a_model_on_lavapipe_only_when_told_and_keeps_the_faster_build(
    bundle_executable: Path,
    lavapipe: FakeHardware,
    vulkan_release: Release,
    tiny_model: Path,
    browser_page: Any,
    tmp_path: Path,
) -> None:
    # A software renderer is never chosen on its own: the install says why and changes nothing.
    refused = _install(bundle_executable, lavapipe, vulkan_release)
    assert refused.returncode != 0
    assert "software renderers are used only when LLAMASHIP_VULKAN_DEVICE names them" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert not (lavapipe.home / "overlays" / "vulkan.json").exists()

    started = time.monotonic()
    installed = _install(bundle_executable, lavapipe, vulkan_release, **{LAVAPIPE: "0"})
    install_seconds = time.monotonic() - started
    assert installed.returncode == 0, installed.stderr
    assert "Vulkan overlay" in installed.stdout and "libggml-vulkan.so" in installed.stdout
    print(f"install and probe of the Vulkan overlay: {install_seconds:.1f} s")

    # Not named: the launch stays on the CPU build and says why.
    with launched([str(bundle_executable)], _launch_env(lavapipe, tiny_model), 300, False) as cpu:
        capabilities = _capabilities(cpu.url)
        assert capabilities["llama_cpp"]["variant"] == "cpu", capabilities
        assert any("software renderer" in event for event in capabilities["events"]), capabilities

    # Named, every layer on the device: the probe's module, Vulkan0 buffers, tokens.
    gpu = _launch_env(lavapipe, tiny_model, **{LAVAPIPE: "0", "LLAMASHIP_VARIANT_CHOICE": "gpu"})
    with launched([str(bundle_executable)], gpu, 600, False) as backend:
        capabilities = _capabilities(backend.url)
        assert capabilities["llama_cpp"]["variant"] == "vulkan", capabilities
        assert capabilities["decision"]["variant"] == "vulkan", capabilities["decision"]
        answer = _generate(backend.url)
        assert answer["usage"]["completion_tokens"] > 0, answer
        log = backend.log.read_text(errors="replace")
        assert re.search(r"Vulkan0 model buffer size", log), log[-3000:]
        assert "llvmpipe" in log
        # The settings page says so too (docs/images/settings-vulkan.png is this screenshot).
        token = (lavapipe.home / ADMIN_TOKEN_NAME).read_text()
        browser_page.goto(f"{backend.url}/settings#token={token}")
        browser_page.wait_for_selector("#llama-variant:has-text('vulkan build')", timeout=60000)
        assert browser_page.locator("#cuda-active").inner_text() == "Yes: Vulkan"
        assert "llvmpipe" in browser_page.locator("#gpu-name").inner_text()
        screenshot = tmp_path / "settings-vulkan.png"
        browser_page.screenshot(path=str(screenshot), full_page=True)
        print(f"settings page on Vulkan: {screenshot}")

    # A forced partial offload (one layer on the device, the rest on the CPU) loads too.
    partial = {**gpu, "LLAMACPP_N_GPU_LAYERS": "1"}
    with launched([str(bundle_executable)], partial, 600, False) as backend:
        assert _capabilities(backend.url)["llama_cpp"]["variant"] == "vulkan"
        assert _generate(backend.url)["usage"]["completion_tokens"] > 0
        log = backend.log.read_text(errors="replace")
        assert re.search(r"offloaded 1/\d+ layers to GPU", log), log[-3000:]

    # Measured (the default): the first launch runs Vulkan and measures both builds once it
    # serves; the CPU build wins on lavapipe, and the next launch keeps it, saying why.
    measured = _launch_env(lavapipe, tiny_model, **{LAVAPIPE: "0"})
    with launched([str(bundle_executable)], measured, 600, False) as backend:
        started = time.monotonic()
        state: dict[str, Any] = {}
        while time.monotonic() - started < 300:
            state = _capabilities(backend.url)["measurement"]
            if state["state"] in ("done", "failed"):
                break
            time.sleep(1)
        measure_seconds = time.monotonic() - started
        assert state["state"] == "done", state
        result = state["result"]
        assert result["faster"] is False, result
        print(f"measured choice on lavapipe: {measure_seconds:.1f} s; {result['reason']}")
    with launched([str(bundle_executable)], measured, 300, False) as backend:
        capabilities = _capabilities(backend.url)
        assert capabilities["llama_cpp"]["variant"] == "cpu", capabilities
        assert "tokens/s" in capabilities["decision"]["reason"] or any(
            "tokens/s" in event for event in capabilities["events"]
        ), capabilities
