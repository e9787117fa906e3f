"""The GPU detection report: the JSON other programs read (field names are a contract)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypedDict, cast

REPORT_SCHEMA = 1

Source = Literal["nvml", "nvidia-smi", "none"]
_SOURCES: frozenset[str] = frozenset({"nvml", "nvidia-smi", "none"})


class GpuInfo(TypedDict):
    """One NVIDIA GPU as the driver describes it; memory in MiB."""

    index: int
    name: str
    uuid: str
    vram_total_mb: int
    vram_free_mb: int
    compute_capability: str


class DetectionReport(TypedDict):
    """What the launch knows about the machine's NVIDIA driver and GPUs."""

    schema: int
    source: Source
    cached: bool
    driver_version: str | None
    cuda_driver_version: str | None
    gpus: list[GpuInfo]
    errors: list[str]


def none_report(errors: Iterable[str] = ()) -> DetectionReport:
    """The report of a machine where no source found a GPU."""
    return {
        "schema": REPORT_SCHEMA,
        "source": "none",
        "cached": False,
        "driver_version": None,
        "cuda_driver_version": None,
        "gpus": [],
        "errors": list(errors),
    }


_GPU_FIELDS: dict[str, type] = {
    "index": int,
    "name": str,
    "uuid": str,
    "vram_total_mb": int,
    "vram_free_mb": int,
    "compute_capability": str,
}


def _check_gpu(data: object) -> None:
    if not isinstance(data, dict):
        raise TypeError("a GPU entry must be a JSON object")
    if set(data) != set(_GPU_FIELDS):
        raise ValueError(f"a GPU entry must hold exactly {sorted(_GPU_FIELDS)}")
    for key, kind in _GPU_FIELDS.items():
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"GPU field {key!r} must be a {kind.__name__}, not {value!r}")


def parse_report(data: object) -> DetectionReport:
    """Check that `data` (e.g. loaded from JSON) has the report's shape.

    Raises TypeError or ValueError saying what is wrong.
    """
    if not isinstance(data, dict):
        raise TypeError("the report must be a JSON object")
    if data.get("schema") != REPORT_SCHEMA:
        raise ValueError(f"report schema {data.get('schema')!r} is not {REPORT_SCHEMA}")
    if data.get("source") not in _SOURCES:
        raise ValueError(f"unknown report source {data.get('source')!r}")
    if not isinstance(data.get("cached"), bool):
        raise TypeError("report field 'cached' must be true or false")
    for key in ("driver_version", "cuda_driver_version"):
        if key not in data or not isinstance(data[key], str | None):
            raise TypeError(f"report field {key!r} must be a string or null")
    gpus, errors = data.get("gpus"), data.get("errors")
    if not isinstance(gpus, list):
        raise TypeError("report field 'gpus' must be a list")
    for gpu in gpus:
        _check_gpu(gpu)
    if not isinstance(errors, list) or not all(isinstance(error, str) for error in errors):
        raise TypeError("report field 'errors' must be a list of strings")
    return cast(DetectionReport, data)
