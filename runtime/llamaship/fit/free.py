"""Free GPU memory read at planning time: NVML, then `nvidia-smi`, else the detection report's.

The detection report is cached between launches, and what it says was free then is not what
is free now: another program may hold most of a card. Only the memory is read here (a few
NVML calls, or one bounded `nvidia-smi` query), matched to the devices by UUID.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace

from llamaship.detect.locate import find_executable
from llamaship.fit.devices import FitDevice
from llamaship.fit.errors import FitError
from llamaship.io.group_run import run_in_group

_MIB = 1 << 20


class FreeMemoryUnreadable(FitError):
    """A source of free memory (NVML, nvidia-smi) gave no usable answer."""


@dataclass(frozen=True)
class FreeMemory:
    """The devices with their free memory as read now, and a note on where it came from."""

    devices: tuple[FitDevice, ...]
    note: str


def nvml_free_mb() -> dict[str, int]:
    """Free MiB of each NVIDIA GPU by UUID, through NVML."""
    try:
        import pynvml
    except ImportError:
        raise FreeMemoryUnreadable("NVML: nvidia-ml-py is not installed") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise FreeMemoryUnreadable(f"NVML: {error}") from None
    try:
        free: dict[str, int] = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            free[uuid] = int(pynvml.nvmlDeviceGetMemoryInfo(handle).free) // _MIB
        return free
    except pynvml.NVMLError as error:
        raise FreeMemoryUnreadable(f"NVML: {error}") from None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass  # the answer (or the error above) is what matters


def smi_free_mb(timeout: float) -> dict[str, int]:
    """Free MiB of each NVIDIA GPU by UUID, through `nvidia-smi` (killed after `timeout` s)."""
    executable = find_executable("nvidia-smi", os.environ)
    if executable is None:
        raise FreeMemoryUnreadable("nvidia-smi: not found on PATH")
    command = [str(executable), "--query-gpu=uuid,memory.free", "--format=csv,noheader,nounits"]
    try:
        returncode, stdout, _ = run_in_group(command, timeout)
    except OSError as error:
        raise FreeMemoryUnreadable(f"nvidia-smi: could not be started: {error}") from None
    except subprocess.TimeoutExpired:
        raise FreeMemoryUnreadable(f"nvidia-smi: no answer within {timeout:g} s") from None
    if returncode != 0:
        raise FreeMemoryUnreadable(f"nvidia-smi: exit status {returncode}")
    free: dict[str, int] = {}
    for line in stdout.decode("utf-8", "replace").splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2:
            raise FreeMemoryUnreadable(f"nvidia-smi: printed {line[:120]!r}, not uuid, MiB")
        if fields[1].isdigit():  # "[N/A]": this GPU keeps its detected value
            free[fields[0]] = int(fields[1])
    return free


def _nvidia_free_mb(timeout: float) -> tuple[dict[str, int], str]:
    """Free MiB by UUID and the source that answered; FreeMemoryUnreadable when none did."""
    errors: list[str] = []
    try:
        return nvml_free_mb(), "NVML"
    except FreeMemoryUnreadable as error:
        errors.append(str(error))
    try:
        return smi_free_mb(timeout), "nvidia-smi"
    except FreeMemoryUnreadable as error:
        errors.append(str(error))
    raise FreeMemoryUnreadable("; ".join(errors))


def _with_free(device: FitDevice, free: dict[str, int]) -> FitDevice:
    if device.backend != "cuda" or device.uuid is None or device.uuid not in free:
        return device
    return replace(device, free_mb=free[device.uuid])


def read_free_now(devices: Sequence[FitDevice], timeout: float) -> FreeMemory:
    """`devices` with the free memory of each CUDA device read now, where it can be.

    A device that cannot be read now keeps its detected value, and the note says so.
    Vulkan devices keep the value they came with.
    """
    cuda = [device for device in devices if device.backend == "cuda" and device.uuid is not None]
    if not cuda:
        return FreeMemory(tuple(devices), "free memory as detected")
    try:
        free, source = _nvidia_free_mb(timeout)
    except FreeMemoryUnreadable as error:
        note = f"free VRAM as detected earlier, not read now ({error})"
        return FreeMemory(tuple(devices), note)
    fresh = tuple(_with_free(device, free) for device in devices)
    missing = [str(device.index) for device in cuda if device.uuid not in free]
    note = f"free VRAM read now through {source}"
    if missing:
        note += f"; GPU {', '.join(missing)}: no reading now, free VRAM as detected"
    return FreeMemory(fresh, note)
