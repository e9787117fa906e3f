"""Fallback detection through the `nvidia-smi` command, bounded by a timeout."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from llamaship.detect.errors import SourceFailed, SourceMissing
from llamaship.detect.locate import find_executable
from llamaship_contract.detection import DetectionReport, GpuInfo

# The order of the columns `_parse_gpu_line` expects (`nvidia-smi --help-query-gpu`).
QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "memory.free",
    "compute_cap",
    "driver_version",
)
_COMPUTE_CAPABILITY = re.compile(r"\d+\.\d+")
_CUDA_VERSION = re.compile(r"CUDA Version:\s*(\d+\.\d+)")


def _run(command: list[str], timeout: float) -> tuple[int, str, str]:
    """Run `command` in its own process group; kill the whole group if it outlives `timeout`.

    Returns the exit status, stdout and stderr.
    """
    # Imported here: the warm (cached) launch never starts a process.
    import subprocess

    from llamaship.io.group_run import run_in_group

    try:
        returncode, stdout, stderr = run_in_group(command, timeout)
    except OSError as error:
        raise SourceFailed(f"nvidia-smi: could not be started: {error}") from None
    except subprocess.TimeoutExpired:
        msg = (
            f"nvidia-smi did not answer within {timeout:g} s and was killed; "
            "the NVIDIA driver may be hung (raise GPU_DETECTION_TIMEOUT if it is just slow)"
        )
        raise SourceFailed(msg) from None
    return returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")


def _parse_gpu_line(line: str) -> tuple[GpuInfo, str]:
    fields = [field.strip() for field in line.split(",")]
    if len(fields) != len(QUERY_FIELDS):
        raise ValueError(f"expected {len(QUERY_FIELDS)} comma-separated fields")
    index, name, uuid, total, free, capability, driver = fields
    if not _COMPUTE_CAPABILITY.fullmatch(capability):
        raise ValueError(f"compute capability {capability!r} is not like 8.6")
    gpu = GpuInfo(
        index=int(index),
        name=name,
        uuid=uuid,
        vram_total_mb=int(total),
        vram_free_mb=int(free),
        compute_capability=capability,
    )
    return gpu, driver


def parse_query_output(text: str) -> tuple[list[GpuInfo], str | None]:
    """Parse `--query-gpu` CSV (noheader, nounits): the GPUs and the driver version."""
    gpus: list[GpuInfo] = []
    drivers: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            gpu, driver = _parse_gpu_line(line)
        except ValueError as problem:
            msg = f"nvidia-smi printed {line[:120]!r}, not the expected CSV ({problem})"
            raise SourceFailed(msg) from None
        gpus.append(gpu)
        drivers.append(driver)
    return gpus, (drivers[0] if drivers else None)


def read_nvidia_smi(timeout: float, env: Mapping[str, str] | None = None) -> DetectionReport:
    """Ask `nvidia-smi` (on PATH) for every GPU; the whole call takes at most `timeout` s."""
    executable = find_executable("nvidia-smi", os.environ if env is None else env)
    if executable is None:
        raise SourceMissing("nvidia-smi: not found on PATH")
    deadline = time.monotonic() + timeout
    query = [
        str(executable),
        f"--query-gpu={','.join(QUERY_FIELDS)}",
        "--format=csv,noheader,nounits",
    ]
    returncode, output, errors = _run(query, timeout)
    if returncode != 0:
        detail = " ".join(f"{output} {errors}".split())[:300] or "no output"
        raise SourceFailed(f"nvidia-smi exited with status {returncode}: {detail}")
    gpus, driver_version = parse_query_output(output)
    return DetectionReport(
        source="nvidia-smi",
        driver_version=driver_version,
        cuda_driver_version=_read_cuda_version(executable, deadline - time.monotonic()),
        gpus=tuple(gpus),
    )


def _read_cuda_version(executable: Path, budget: float) -> str | None:
    """The "CUDA Version" of nvidia-smi's banner, within what is left of the timeout."""
    if budget <= 0:
        return None
    try:
        returncode, output, _ = _run([str(executable)], budget)
    except SourceFailed:
        return None  # the GPUs are known; the CUDA version is only a refinement
    match = _CUDA_VERSION.search(output) if returncode == 0 else None
    return match.group(1) if match else None
