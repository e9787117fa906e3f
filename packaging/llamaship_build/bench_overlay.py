"""Overlay part of `nox -s bench`: install throughput (verify + extract + fsync) and activation.

The overlay is built here from the CUDA backend module of a real CUDA wheel (shared/fixtures
by default) at the release's zstd level, with a cudart-only runtime layer (cuBLAS is a 444 MB
download: its layer size is measured by a real `nox -s overlay`, see docs/cuda-build.md).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

from llamaship_build.bench_probe import last_line, probe_command, run_probe
from llamaship_build.llama_wheel import pinned_version
from llamaship_build.overlay_build import build_overlay, download_runtime_wheels
from llamaship_build.overlay_layers import module_from_wheel
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
FAILURE = "the overlay benchmark failed"


def install_command(
    python: Path, home: Path, index: Path, public_key: str, llama_cpp_version: str
) -> list[str]:
    """Install the overlay `index` offers into `home` (the file work only: no probe), timed."""
    machine = dump_document(BENCH_MACHINE).decode("utf-8")
    return probe_command(
        python,
        "install",
        str(home),
        str(index),
        public_key,
        machine,
        "--llama-cpp-version",
        llama_cpp_version,
    )


def activate_command(python: Path, module: str, runtime_lib_dir: str) -> list[str]:
    """Activate an installed overlay in a fresh interpreter, timed."""
    return probe_command(python, "activate", module, runtime_lib_dir)


def run(project: Project, wheel: Path, rounds: int = 3, python: Path | None = None) -> str:
    """The `## CUDA overlay` section; `python` (default: this one) has llamaship installed."""
    interpreter = python or Path(sys.executable)
    llama_cpp_version = pinned_version(project.requirements)
    private, public = generate_keypair()
    runtime = download_runtime_wheels(
        project.requirements / "gpu.txt",
        cache_dir() / "nvidia-wheels",
        packages=("nvidia-cuda-runtime",),
    )
    with tempfile.TemporaryDirectory(prefix="llamaship-bench-") as scratch:
        release = Path(scratch) / "release"
        paths = build_overlay(
            module_from_wheel(wheel, Path(scratch)),
            release,
            llama_cpp_version=llama_cpp_version,
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
            home = Path(scratch) / f"home{round_index}"
            install = install_command(
                interpreter, home, release / INDEX_NAME, public, llama_cpp_version
            )
            installed = json.loads(last_line(run_probe(install, FAILURE), FAILURE))
            seconds.append(float(installed["seconds"]))
            activate = activate_command(
                interpreter, installed["module"], installed["runtime_lib_dir"]
            )
            activation_ms.append(float(last_line(run_probe(activate, FAILURE), FAILURE)))
    median_install = statistics.median(seconds)
    lines = [
        "## CUDA overlay (layers built here from the sm_75 fixture wheel's backend module, "
        f"zstd {RELEASE_LEVEL})",
        "",
        "| measure | value | target |",
        "| --- | --- | --- |",
        f"| `llama-cuda` layer download, one architecture | {llama_bytes / MB:.1f} MB "
        f"| <= 40 MB (a GPU downloads one architecture's overlay; {ANCHORS}) |",
        f"| archives (both layers, cudart-only runtime) | {archive_bytes / MB:.1f} MB "
        f"({unpacked / MB:.1f} MB unpacked) | |",
        f"| install: index + signatures + download (file://) + verify + extract + fsync + "
        f"switch, median of {rounds} | {median_install:.2f} s | |",
        f"| install throughput, archive bytes | {archive_bytes / MB / median_install:.0f} MB/s "
        "| >= 200 MB/s |",
        f"| activation (preload the CUDA runtime, name the module in the environment), median "
        f"of {rounds} | "
        f"{statistics.median(activation_ms):.1f} ms | <= 50 ms |",
    ]
    return "\n".join(lines) + "\n"
