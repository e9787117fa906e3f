"""Overlay part of `nox -s bench`: install throughput (verify + extract + fsync) and activation.

The overlay is built here from a real CUDA wheel (shared/fixtures by default) at the release's
zstd level, with a cudart-only runtime layer (cuBLAS is a 444 MB download: its layer size is
measured by a real `nox -s overlay`, see docs/cuda-build.md).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.overlay_build import build_overlay, download_runtime_wheels
from llamaship_build.overlay_release import MIN_DRIVER
from llamaship_build.project import Project, cache_dir
from llamaship_build.release_index import write_release_index
from llamaship_contract.detection import DetectionReport, GpuInfo
from llamaship_contract.document import dump_document
from llamaship_contract.names import INDEX_NAME
from llamaship_contract.signing import generate_keypair

MB = 1_000_000
# The machine the benchmark installs for: one GPU per common architecture, so the installer's
# compatibility rule accepts whatever architectures the wheel was compiled for.
BENCH_MACHINE = DetectionReport(
    source="nvml",
    driver_version="580.95.05",
    cuda_driver_version="13.0",
    gpus=tuple(
        GpuInfo(
            index=index,
            name=f"sm_{capability}",
            uuid=f"GPU-{index}",
            vram_total_mb=24576,
            vram_free_mb=24000,
            compute_capability=capability,
        )
        for index, capability in enumerate(("7.5", "8.0", "8.6", "8.9", "9.0", "12.0"))
    ),
)
RELEASE_LEVEL = 19
# What other projects ship for the same job (CUDA libraries of one release).
ANCHORS = "Ollama's CUDA 12 libraries ~1 GB; the seed's plan ~150 MB"
# The runtime's steps run in the environment under test (`python`); this side reads their output.
# Install: the file work only (the bench times the probe on its own), then one JSON line.
_INSTALL = """
import json, sys, time
from pathlib import Path
from llamaship.overlay.install import Installer
from llamaship.overlay.select import Target
from llamaship.paths import DataDirs
from llamaship_contract.detection import DetectionReport
from llamaship_contract.document import parse_document

home, index, public = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
machine = parse_document(DetectionReport, sys.argv[4], "the benchmark's machine")
target = Target(platform="linux_x86_64", os_name="linux", python_tags=("py3",),
                llama_cpp_version="0.3.36", machine=machine)
installer = Installer(DataDirs(home), [public], probe=lambda llama, runtime, timeout: None)
started = time.perf_counter()
overlay = installer.install(index, target).overlay
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "llama_dir": str(overlay.llama_dir),
                  "runtime_lib_dir": str(overlay.runtime_lib_dir)}))
"""
_ACTIVATE = """
import sys, time
from pathlib import Path
from llamaship.launch.activate import activate
started = time.perf_counter()
activate(Path(sys.argv[1]), Path(sys.argv[2]))
print((time.perf_counter() - started) * 1000)
"""


def _last_line(python: Path, script: str, *args: str) -> str:
    """The last stdout line of `script` run by `python` with `args`; BuildError if it fails."""
    result = subprocess.run(
        [str(python), "-c", script, *args], capture_output=True, text=True, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        msg = f"the overlay benchmark failed (exit {result.returncode}): {result.stderr[-500:]}"
        raise BuildError(msg)
    return lines[-1]


def run(project: Project, wheel: Path, rounds: int = 3, python: Path | None = None) -> str:
    """The `## CUDA overlay` section; `python` (default: this one) has llamaship installed."""
    interpreter = python or Path(sys.executable)
    machine = dump_document(BENCH_MACHINE).decode("utf-8")
    private, public = generate_keypair()
    runtime = download_runtime_wheels(
        project.requirements / "gpu.txt",
        cache_dir() / "nvidia-wheels",
        packages=("nvidia-cuda-runtime",),
    )
    with tempfile.TemporaryDirectory(prefix="llamaship-bench-") as scratch:
        release = Path(scratch) / "release"
        paths = build_overlay(
            wheel,
            release,
            cuda_version="13.0",
            min_driver=MIN_DRIVER["13"],
            min_vram_mb=1024,
            serial=1,
            overlay_version="bench",
            signing_key_b64=private,
            runtime_wheels=runtime,
            runtime_libraries=["libcudart.so.13"],
            compression_level=RELEASE_LEVEL,
        )
        manifests = [path for path in paths if path.suffix == ".json"]
        write_release_index(release, [manifests], serial=1, signing_key_b64=private, base_url="")
        archive_bytes = sum(path.stat().st_size for path in paths if path.name.endswith(".zst"))
        llama_bytes = sum(
            path.stat().st_size
            for path in paths
            if path.name.startswith("llama-cuda") and path.name.endswith(".zst")
        )
        unpacked = sum(json.loads(path.read_text())["unpacked_size"] for path in manifests)
        seconds, activation_ms = [], []
        for round_index in range(rounds):
            home = str(Path(scratch) / f"home{round_index}")
            index = str(release / INDEX_NAME)
            installed = json.loads(_last_line(interpreter, _INSTALL, home, index, public, machine))
            seconds.append(float(installed["seconds"]))
            activated = _last_line(
                interpreter, _ACTIVATE, installed["llama_dir"], installed["runtime_lib_dir"]
            )
            activation_ms.append(float(activated))
    install = statistics.median(seconds)
    lines = [
        f"## CUDA overlay (layers built here from the sm_75 fixture wheel, zstd {RELEASE_LEVEL})",
        "",
        "| measure | value | target |",
        "| --- | --- | --- |",
        f"| `llama-cuda` layer download, one architecture | {llama_bytes / MB:.1f} MB "
        f"| <= 150 MB ({ANCHORS}) |",
        f"| archives (both layers, cudart-only runtime) | {archive_bytes / MB:.1f} MB "
        f"({unpacked / MB:.1f} MB unpacked) | |",
        f"| install: index + signatures + download (file://) + verify + extract + fsync + "
        f"switch, median of {rounds} | {install:.2f} s | |",
        f"| install throughput, archive bytes | {archive_bytes / MB / install:.0f} MB/s "
        "| >= 200 MB/s |",
        f"| activation (preload libraries, overlay first on sys.path), median of {rounds} | "
        f"{statistics.median(activation_ms):.1f} ms | <= 50 ms |",
    ]
    return "\n".join(lines) + "\n"
