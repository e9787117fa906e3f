"""The bundle runs on an x86-64 CPU without AVX (emulated by qemu-user as a Nehalem).

The portable build picks the best CPU backend at run time (here libggml-cpu-sse42); a build
with -march=native would die with SIGILL on such a CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from hardware.fakes import FakeHardware
from llamaship_build.launch import launched

pytestmark = pytest.mark.slow


def test_bundle_generates_on_a_cpu_without_avx(bundle_executable: Path, hardware: FakeHardware,
                                               gemma_model: Path) -> None:
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-x86_64 is required: install Debian's qemu-user (.ci/run does)"
    env = hardware.env(LLAMASHIP_MODEL=str(gemma_model), LLAMACPP_N_THREADS="1",
                       LLAMASHIP_N_CTX="256")
    command = [qemu, "-cpu", "Nehalem", str(bundle_executable)]
    with launched(command, env, timeout=600, inherit_env=False) as backend:
        reply = httpx.post(f"{backend.url}/v1/chat/completions", timeout=600, json={
            "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3,
            "temperature": 0})
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] >= 1
        capabilities = httpx.get(f"{backend.url}/api/capabilities", timeout=60).json()
    assert capabilities["llama_cpp"]["cpu_backend"] == "libggml-cpu-sse42.so"
