"""The portable llama.cpp build serves on an x86-64 CPU without AVX (qemu-user's Nehalem).

The build picks its best CPU backend at run time (here libggml-cpu-sse42); a -march=native
build would die with SIGILL on such a CPU. The server runs from the test venv, which holds
the same locked packages and portable wheel as the bundle: the frozen `backend` itself cannot
be run this way, because PyInstaller's bootloader re-executes itself (single-process onedir
mode), and that exec leaves qemu-user's emulation.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from hardware.fakes import FakeHardware
from llamaship_build.launch import launched

pytestmark = pytest.mark.slow


def test_portable_build_generates_on_a_cpu_without_avx(
    hardware: FakeHardware, gemma_model: Path
) -> None:
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-x86_64 is required: install Debian's qemu-user (.ci/run does)"
    # -0 keeps argv[0] at the venv's python, so the emulated interpreter finds the venv.
    command = [
        qemu,
        "-cpu",
        "Nehalem",
        "-0",
        sys.executable,
        os.path.realpath(sys.executable),
        "-m",
        "llamaship_backend",
    ]
    env = hardware.env(
        LLAMASHIP_MODEL=str(gemma_model), LLAMACPP_N_THREADS="1", LLAMASHIP_N_CTX="256"
    )
    with launched(command, env, timeout=600, inherit_env=False) as backend:
        capabilities = httpx.get(f"{backend.url}/api/capabilities", timeout=60).json()
        assert capabilities["llama_cpp"]["cpu_backend"] == "libggml-cpu-sse42.so"
        reply = httpx.post(
            f"{backend.url}/v1/chat/completions",
            timeout=600,
            json={
                "messages": [{"role": "user", "content": "Say hi."}],
                "max_tokens": 3,
                "temperature": 0,
            },
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] >= 1
