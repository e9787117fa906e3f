"""The launch's state files: boot counting per overlay, the probe record and the last launch.

- `BootCount` (`state/boot-count/<overlay version>.json`): how many more unhealthy launches the
  overlay may have before it is quarantined (systemd-boot's boot assessment: tries left), the
  launches running it now (pid, process start time, phase) and the last launch that died.
- `ProbeRecord` (`state/probe.json`): the probe that passed for an overlay with this driver,
  written by the installer or the launch, so the next launch does not probe again.
- `LaunchStatus` (`state/last-launch.json`): what the last launch decided and why, its events
  and its health phase; `llamaship status` shows it as written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import Field, JsonValue

from llamaship_contract.document import Document

LAUNCH_SCHEMA: Final = 1

LaunchPhase = Literal["booting", "serving", "loading", "healthy", "ended-by-signal", "ended"]
"""booting: choosing and importing llama.cpp (the overlay's code runs); serving: listening, no
model loaded yet; loading: the first model load and first token; healthy: a token was generated
on the active variant; ended-by-signal: stopped by SIGTERM/SIGINT; ended: stopped otherwise
(an error exit, a restart)."""

# A launch that dies in one of these phases counts against the overlay it ran.
COUNTED_PHASES: frozenset[LaunchPhase] = frozenset({"booting", "loading"})


class LaunchProcess(Document):
    """One launch: its process (pid + creation time survive pid reuse) and where it got to."""

    pid: int = Field(ge=1)
    create_time: float = Field(ge=0, description="process creation time (psutil), seconds")
    started: datetime
    phase: LaunchPhase
    model: str | None = Field(default=None, description="the model being loaded, if any")
    plan: dict[str, JsonValue] | None = Field(
        default=None, description="how the model was being loaded (the engine's load plan)"
    )


class BootCount(Document):
    """Boot counting for one overlay version: quarantined when `tries_left` reaches 0."""

    schema_: Literal[1] = Field(default=LAUNCH_SCHEMA, alias="schema")
    overlay_version: str
    tries: int = Field(ge=1, description="unhealthy launches in a row that quarantine it")
    tries_left: int = Field(ge=0)
    running: tuple[LaunchProcess, ...] = ()
    last_failure: LaunchProcess | None = Field(
        default=None, description="the last launch that died while booting or loading"
    )


class ProbeKey(Document):
    """What a passed probe vouches for: these overlay layers with this driver and these GPUs."""

    overlay_version: str
    layers: dict[str, str]
    driver: dict[str, JsonValue]


class BackendDevice(Document):
    """A non-CPU device a ggml backend registered in the probe (ggml's backend device API)."""

    backend: str = Field(description="the ggml backend, e.g. CUDA")
    name: str = Field(description="ggml's device name, e.g. CUDA0")
    description: str = Field(description="the device's own name, e.g. NVIDIA GeForce RTX 2080")
    memory_total: int = Field(ge=0, description="bytes")
    memory_free: int = Field(ge=0, description="bytes")


class ProbeResult(Document):
    """What the probe process saw with the overlay active."""

    llama_cpp_version: str
    llama_cpp_path: str
    backends: tuple[str, ...]
    devices: tuple[str, ...]
    gpu_devices: tuple[BackendDevice, ...] = ()
    cuda_error: str | None = Field(
        default=None,
        description="why the CUDA backend registered no device (llama.cpp's or "
        "the dynamic loader's own message), when it did not",
    )
    libraries: tuple[str, ...] = Field(
        default=(),
        description="the llama.cpp libraries (libllama, libggml*) the probe process mapped: "
        "the bundle's, and the overlay's backend module once it loaded",
    )


class ProbeRecord(Document):
    """A probe that passed; `result` is absent when the prober reported no details."""

    schema_: Literal[1] = Field(default=LAUNCH_SCHEMA, alias="schema")
    key: ProbeKey
    by: Literal["install", "launch"]
    at: datetime
    result: ProbeResult | None = None


class LaunchStatus(Document):
    """The last launch as it explained itself: decision, reason, events and health phase."""

    schema_: Literal[1] = Field(default=LAUNCH_SCHEMA, alias="schema")
    process: LaunchProcess
    decision: Literal["cpu", "cuda", "vulkan"]
    reason: str
    upgrade_available: bool
    variant: Literal["cpu", "cuda", "vulkan"] | None = Field(
        description="the llama.cpp build actually imported (None: not imported yet)"
    )
    overlay_version: str | None
    llama_cpp_version: str | None
    events: tuple[str, ...] = ()
    tries_left: int | None = Field(
        default=None, description="the overlay's boot count after this launch's assessment"
    )
    updated: datetime
    log_file: str | None = None
    error: str | None = Field(
        default=None,
        description="the error the launch ended with, as it printed it (None: no error)",
    )
