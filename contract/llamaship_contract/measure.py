"""The measured choice between a GPU variant and the CPU build (`VariantMeasurement`).

The runtime times prompt processing (pp) and generation (tg), as llama-bench does, for a usable
GPU variant and for the CPU build, each in a child process, and caches the result per model x
variant x driver under `LLAMASHIP_HOME/state/measurements/`. From the next start the GPU variant
runs only if it was faster (`faster`; `reason` says why with the numbers).
`/api/capabilities` shows the measurement in progress or done (`MeasurementStatus`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaship_contract.document import Document

MEASUREMENT_SCHEMA: Literal[1] = 1

GpuVariant = Literal["cuda", "vulkan"]
MeasuredVariant = Literal["cpu", "cuda", "vulkan"]
MeasurementState = Literal["idle", "running", "done", "failed"]


class ModelIdentity(Document):
    """Which model file was measured: a cheap identity, checked at every start.

    Size, modification time and the sha256 of the first MiB: a changed or replaced file gets a
    new identity without hashing gigabytes at launch."""

    path: str
    size: int = Field(ge=0)
    mtime_ns: int = Field(ge=0)
    head_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the file's first MiB (or all of it)"
    )


class VariantSpeed(Document):
    """One variant's timed run in a child process (llama-bench's pp and tg)."""

    variant: MeasuredVariant
    n_gpu_layers: int = Field(ge=-1, description="-1: all layers; 0: none (CPU only)")
    load_seconds: float = Field(ge=0)
    prompt_tokens: int = Field(ge=1, description="tokens evaluated at once (pp)")
    prompt_tokens_per_second: float = Field(ge=0)
    generated_tokens: int = Field(ge=1, description="tokens decoded one at a time (tg)")
    tokens_per_second: float = Field(ge=0, description="generation (tg) tokens per second")


class VariantMeasurement(Document):
    """A GPU variant measured against the CPU build for one model and driver."""

    schema_: Literal[1] = Field(default=MEASUREMENT_SCHEMA, alias="schema")
    model: ModelIdentity
    variant: GpuVariant
    driver: str = Field(
        min_length=1, description="the driver identity the caller passed (version, device)"
    )
    gpu: VariantSpeed = Field(description="the GPU variant's run")
    cpu: VariantSpeed = Field(description="the CPU build's run, same model and threads")
    faster: bool = Field(description="the GPU variant is used: it measured faster")
    reason: str = Field(description="one line with the numbers")
    measured_at: str = Field(description="UTC time, ISO 8601")
    seconds: float = Field(ge=0, description="how long the measurement took in all")


class MeasurementStatus(Document):
    """`/api/capabilities`' `measurement`: the measured choice, in progress or done."""

    state: MeasurementState = "idle"
    progress: float = Field(default=0.0, ge=0, le=1, description="share of the runs done")
    message: str = Field(default="", description="what runs now, or why it failed (one line)")
    result: VariantMeasurement | None = None
    next_variant: MeasuredVariant | None = Field(
        default=None, description="what the next start runs, given the result"
    )
    restart_advised: bool = Field(
        default=False, description="the next start would run another variant than this one"
    )
