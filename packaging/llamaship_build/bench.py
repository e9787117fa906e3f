"""`nox -s bench`: bundle size, launch-to-healthy, and tokens/s portable vs native, one table.

Every number comes from this run; ratios compare builds measured side by side, alternating,
so a noisy shared machine skews both alike. Results also go to docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.bundle import MANIFEST_NAME, build_venv, install_project_wheel, venv_python
from llamaship_build.launch import launched
from llamaship_build.llama_wheel import NATIVE, PORTABLE, Flavour, Pin, ensure_wheel
from llamaship_build.locks import host_lock
from llamaship_build.models import gemma_model
from llamaship_build.project import Project, cache_dir
from llamaship_build.toolchain import default_toolchain
from llamaship_contract.names import ADMIN_TOKEN_NAME

MB = 1_000_000
HEADER = """# Benchmarks

Written by `scripts/nox -s bench` on the machine named below; every ratio compares builds
measured in the same run. Machines are shared and noisy: read absolute numbers as rough.

"""


@dataclass(frozen=True)
class Contender:
    """One build of the backend to time: how to start it."""

    name: str
    command: tuple[str, ...]


def _median_launch(command: Sequence[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        with (
            tempfile.TemporaryDirectory() as home,
            launched(command, {"LLAMASHIP_HOME": home}) as backend,
        ):
            times.append(backend.seconds_to_healthy)
    return statistics.median(times)


def _tokens_per_second(
    command: Sequence[str], model: Path, threads: int, n_tokens: int
) -> tuple[float, float]:
    """Generation tokens/s (best of the timed runs) and the benchmark's own overhead (the
    largest share of wall time spent outside llama.cpp's decode calls)."""
    import httpx

    env = {"LLAMASHIP_MODEL": str(model), "LLAMACPP_N_THREADS": str(threads)}
    with (
        tempfile.TemporaryDirectory() as home,
        launched(command, {**env, "LLAMASHIP_HOME": home}) as backend,
    ):
        token = (Path(home) / ADMIN_TOKEN_NAME).read_text()  # the backend made it at start
        speeds, overheads = [], []
        for _ in range(3):  # the first request also loads the model
            reply = httpx.post(
                f"{backend.url}/api/admin/benchmark",
                json={"n_gen": n_tokens, "cpu": False},
                timeout=300,
                headers={"Authorization": f"Bearer {token}"},
            )
            reply.raise_for_status()
            speeds.append(float(reply.json()["active"]["tokens_per_second"]))
            overheads.append(float(reply.json()["active"]["overhead_fraction"]))
    return max(speeds[1:]), max(overheads)


def _share(manifest: dict[str, object], count: int) -> float:
    components = manifest["largest_components"]
    assert isinstance(components, list)
    top = sum(int(item["bytes"]) for item in components[:count])
    return 100 * top / int(str(manifest["unpacked_bytes"]))


def _wheel(project: Project, flavour: Flavour) -> Path:
    """The llama-cpp-python wheel of `flavour`, compiled by the bundle's toolchain (on Linux
    the Debian 11 root), so bundle and venvs differ only in flags and packaging."""
    pin = Pin.from_lock(host_lock(project.requirements, "cpu"))
    return ensure_wheel(pin, flavour, cache_dir() / "wheelhouse", default_toolchain())


def _contenders(project: Project) -> list[Contender]:
    contenders = [
        Contender("bundle (portable build)", (str(project.dist / "backend" / "backend"),))
    ]
    for purpose, flavour in (("bench-native", NATIVE), ("bench-portable", PORTABLE)):
        python = venv_python(build_venv(project, _wheel(project, flavour), purpose=purpose))
        install_project_wheel(project, python)
        label = f"venv ({flavour.name} build{', -march=native' if flavour is NATIVE else ''})"
        contenders.append(Contender(label, (str(python), "-m", "llamaship_backend")))
    return contenders


def _detection_table(project: Project) -> str:
    script = project.root / "scripts" / "bench_detect.py"
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, cwd=project.root
    )
    return result.stdout.strip()


def _archive_formats(bundle_dir: Path) -> list[tuple[str, int, float]]:
    """(format, bytes, unpack seconds) of the bundle packed as zstd -19 and as xz -9."""
    from llamaship_build.archive import SUFFIXES, make_archive, unpack

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for archive_format in ("zstd", "xz"):
            archive = make_archive(
                bundle_dir, Path(scratch) / f"b{SUFFIXES[archive_format]}", archive_format
            )
            seconds = min(
                unpack(archive, Path(scratch) / f"out-{archive_format}-{attempt}")
                for attempt in range(3)
            )
            results.append((archive_format, archive.stat().st_size, seconds))
    return results


def run(
    project: Project,
    launches: int,
    rounds: int,
    n_tokens: int,
    threads: int,
    overlay_wheel: Path | None,
) -> str:
    manifest = json.loads((project.dist / MANIFEST_NAME).read_text())
    from llamaship_build.archive import unpack

    with tempfile.TemporaryDirectory() as scratch:
        unpack_seconds = unpack(project.dist / manifest["archive"]["name"], Path(scratch))
    formats = _archive_formats(project.dist / "backend")
    model = gemma_model(cache_dir() / "models")
    bundle_command = (str(project.dist / "backend" / "backend"),)
    launch_seconds = _median_launch(bundle_command, launches)

    contenders = _contenders(project)
    speeds: dict[str, list[float]] = {contender.name: [] for contender in contenders}
    overhead = 0.0
    for _ in range(rounds):  # alternate, so load on the machine hits every build alike
        for contender in contenders:
            speed, run_overhead = _tokens_per_second(contender.command, model, threads, n_tokens)
            speeds[contender.name].append(speed)
            overhead = max(overhead, run_overhead)
    median = {name: statistics.median(values) for name, values in speeds.items()}
    bundled, native = median[contenders[0].name], median[contenders[1].name]

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "## CPU bundle",
        "",
        "| measure | value | target |",
        "| --- | --- | --- |",
        f"| archive size ({manifest['archive']['name']}) | "
        f"{manifest['archive']['bytes'] / MB:.1f} MB | <= 32 MB (Linux) |",
        f"| archive unpack time | {unpack_seconds:.2f} s | |",
        f"| unpacked size | {manifest['unpacked_bytes'] / MB:.1f} MB | <= 120 MB |",
        f"| files | {manifest['file_count']} | |",
        f"| launch to healthy (median of {launches}) | {launch_seconds:.2f} s | <= 2 s |",
        f"| tokens/s, bundled portable / native venv | {bundled / native:.2f} | >= 0.90 |",
        f"| benchmark overhead (wall time outside llama.cpp's decode calls, worst run) | "
        f"{100 * overhead:.2f} % | <= 2 % |",
        "",
        "The same bundle in both candidate formats (unpack: best of 3, in-process):",
        "",
        "| format | size | unpack time |",
        "| --- | --- | --- |",
        *(f"| {name} | {size / MB:.1f} MB | {seconds:.2f} s |" for name, size, seconds in formats),
        "",
        "Largest components (the two largest make up "
        f"{_share(manifest, 2):.0f} % of the unpacked bundle):",
        "",
        "| component | MB |",
        "| --- | --- |",
        *(
            f"| `{item['path']}` | {item['bytes'] / MB:.1f} |"
            for item in manifest["largest_components"][:5]
        ),
        "",
        f"Generation, gemma3-270m Q4_K_M, {n_tokens} tokens, {threads} thread(s), greedy; "
        f"median of {rounds} alternating rounds (each the best of 2 timed requests):",
        "",
        "| build | tokens/s | runs |",
        "| --- | --- | --- |",
        *(
            f"| {name} | {median[name]:.1f} | {', '.join(f'{v:.1f}' for v in values)} |"
            for name, values in speeds.items()
        ),
        "",
        "## GPU detection",
        "",
        _detection_table(project),
        "",
    ]
    from llamaship_build import bench_fit

    portable = venv_python(build_venv(project, _wheel(project, PORTABLE), purpose="bench-portable"))
    lines.append(bench_fit.run(project, model, portable))
    if overlay_wheel is not None:
        from llamaship_build import bench_overlay

        lines.append(bench_overlay.run(project, overlay_wheel))
    return "\n".join(lines) + "\n"
