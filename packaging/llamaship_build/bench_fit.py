"""The GPU fit's numbers for `nox -s bench`: estimate accuracy, fit-cache hit time, tool size.

The estimate is compared with the buffers llama.cpp allocates (target: model and KV within
5 %); a fit-cache hit, the whole `plan_load` call of a launch that skips the fit, must take at
most 5 ms; the fit tool's size is what it adds to each build.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from llamaship_build.bench_probe import probe_command, run_probe
from llamaship_build.errors import BuildError
from llamaship_build.fit_accuracy import TARGET_ERROR, compare_all, markdown
from llamaship_build.fit_tool import cached_tool
from llamaship_build.gguf_models import Shape, write_llama_gguf
from llamaship_build.llama_wheel import Pin
from llamaship_build.project import Project, cache_dir
from llamaship_contract.detection import DetectionReport, GpuInfo
from llamaship_contract.document import dump_document

CACHE_HIT_TARGET_MS = 5.0
MB = 1_000_000
BENCH_MACHINE = DetectionReport(
    source="nvml",
    driver_version="550.54.14",
    gpus=(
        GpuInfo(
            index=0,
            name="GPU",
            uuid="GPU-0",
            vram_total_mb=8192,
            vram_free_mb=7800,
            compute_capability="7.5",
        ),
    ),
)


def cache_hit_command(
    python: Path, home: Path, model: Path, runs: int, llama_cpp_version: str
) -> list[str]:
    """`plan_load` answered from a fit cache in `home`, timed `runs` times, in `python`."""
    report = dump_document(BENCH_MACHINE).decode("utf-8")
    return probe_command(
        python,
        "cache-hit",
        str(home),
        str(model),
        str(runs),
        report,
        "--llama-cpp-version",
        llama_cpp_version,
    )


def cache_hit_ms(
    python: Path, llama_cpp_version: str, runs: int = 200
) -> tuple[float, float, float]:
    """First, median and 95th-percentile time of `plan_load` answered from the cache, in ms.

    `python` has llamaship installed; the calls run there, this side reads their times.
    """
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        model = write_llama_gguf(home / "model.gguf", Shape())
        command = cache_hit_command(python, home, model, runs, llama_cpp_version)
        result = run_probe(command, "the fit-cache benchmark failed", timeout=300)
    try:
        times = [float(value) for value in json.loads(result.stdout.splitlines()[-1])]
    except (IndexError, json.JSONDecodeError, TypeError, ValueError):
        msg = f"the fit-cache benchmark printed no times: {result.stdout[-200:]!r}"
        raise BuildError(msg) from None
    return times[0], statistics.median(times), statistics.quantiles(times, n=20)[-1]


def run(project: Project, model: Path, python: Path) -> str:
    """The `## GPU fit` section; `python` has llama_cpp and llamaship installed."""
    rows = compare_all(cache_dir() / "fit-accuracy", model, python=python)
    worst_model = max(row.model_error for row in rows)
    worst_kv = max(row.kv_error for row in rows)
    pin = Pin.from_lock(project.requirements / "cpu.txt")
    first_ms, median_ms, p95_ms = cache_hit_ms(python, pin.version)
    tool = cached_tool(pin, cache_dir() / "fit-tool")
    size = f"{tool.size / MB:.2f} MB ({len(tool.files)} files)" if tool else "not built"
    return "\n".join(
        [
            "## GPU fit",
            "",
            "| measure | value | target |",
            "| --- | --- | --- |",
            f"| estimate error, model bytes (worst of {len(rows)}) | {worst_model:.2%} | "
            f"<= {TARGET_ERROR:.0%} |",
            f"| estimate error, KV bytes (worst of {len(rows)}) | {worst_kv:.2%} | "
            f"<= {TARGET_ERROR:.0%} |",
            f"| fit-cache hit, `plan_load` (first / median / 95th percentile of 200) | "
            f"{first_ms:.2f} / {median_ms:.2f} / {p95_ms:.2f} ms | <= {CACHE_HIT_TARGET_MS:g} ms |",
            f"| llama-fit-params added to each build (stripped) | {size} | |",
            "",
            "The estimate against llama.cpp's own buffers (CPU load, llama-cpp-python's settings: "
            "micro-batch 512, no flash attention, full-size SWA cache; compute is a reserve, not a "
            "target):",
            "",
            markdown(rows),
        ]
    )
