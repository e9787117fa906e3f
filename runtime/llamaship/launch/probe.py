"""Try an overlay in a child process first: its native libraries may crash the process.

The child is this program's `probe` command: the bundle's own llama.cpp, with the overlay's
backend module named by `GGML_BACKEND_PATH` in its environment (and, for a CUDA overlay, the
CUDA runtime preloaded and on the loader's search path), as the launch will run it.

The probe also reports the devices the CUDA backend registered. A CUDA overlay whose backend
sees none of the GPUs NVML reports (no usable libcuda.so.1, a driver older than the runtime)
would run CPU code from a 700 MB overlay: `check_cuda_devices` raises `NoCudaDevice` and the
launch runs the CPU bundle until the driver changes (the probe record is keyed by the driver).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from llamaship.io.group_run import self_command
from llamaship.launch.activate import cuda_environment
from llamaship_contract.detection import GpuInfo
from llamaship_contract.document import parse_document
from llamaship_contract.errors import ContractError, LlamashipError
from llamaship_contract.launch import BackendDevice, ProbeResult

_DEVICE_TYPES = {1: "gpu", 2: "igpu", 3: "accel"}  # enum ggml_backend_dev_type; 0 is the CPU
VRAM_TOLERANCE = 0.10  # CUDA's total can be below NVML's (memory the driver reserves)


class ProbeFailed(LlamashipError):
    """The overlay crashed, hung or failed to load in the probe process."""


class ModuleNotLoaded(LlamashipError):
    """The backend module is not the one ggml loaded, the loader refused the module itself
    (damaged, or from another llama.cpp build), or it registered no device."""


class NoCudaDevice(LlamashipError):
    """The overlay works, but its CUDA backend sees none of the detected GPUs.

    Not the overlay's fault: the launch runs the CPU build for this driver, without
    quarantining the overlay, and probes again when the driver changes."""


def run_probe(module: Path, runtime_lib_dir: Path, timeout: float) -> ProbeResult:
    """Load the bundle's llama.cpp plus a CUDA overlay's backend `module` in a subprocess,
    with the CUDA runtime of `runtime_lib_dir`, as activation will (`cuda_environment`)."""
    arguments = [
        "--backend-module",
        os.fspath(module),
        "--cuda-runtime",
        os.fspath(runtime_lib_dir),
    ]
    environment = {**os.environ, **cuda_environment(module, runtime_lib_dir, os.environ)}
    return _run_child(arguments, timeout, environment)


def run_module_probe(module: Path, environment: Mapping[str, str], timeout: float) -> ProbeResult:
    """Load the bundle's llama.cpp plus the backend module `module` (a Vulkan overlay) in a
    subprocess whose environment adds `environment` (GGML_BACKEND_PATH, the device list)."""
    return _run_child(
        ["--backend-module", os.fspath(module)], timeout, {**os.environ, **environment}
    )


def _run_child(
    arguments: Sequence[str], timeout: float, environment: Mapping[str, str] | None
) -> ProbeResult:
    command = [*self_command(), "probe", *arguments]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env=None if environment is None else dict(environment),
        )
    except subprocess.TimeoutExpired:
        msg = f"the overlay probe did not finish within {timeout:g} s (hung while loading)"
        raise ProbeFailed(msg) from None
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        msg = f"the overlay probe crashed ({name}) while loading the overlay's backend module"
        raise ProbeFailed(msg)
    # The child writes its `ProbeResult` as the last line of stdout, in UTF-8.
    last_line = (result.stdout.decode(errors="replace").strip().splitlines() or [""])[-1]
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        detail = (stderr.strip().splitlines() or ["no output"])[-1]
        msg = f"the overlay probe failed (exit {result.returncode}): {detail}"
        raise ProbeFailed(msg)
    try:
        return parse_document(ProbeResult, last_line, "the overlay probe's result")
    except ContractError:
        msg = f"the overlay probe printed no result (last line: {last_line!r})"
        raise ProbeFailed(msg) from None


def backend_devices(ggml_library: Path) -> tuple[BackendDevice, ...]:
    """The non-CPU devices registered in the ggml registry of `ggml_library` (already loaded
    by `llamaship.native.load_ggml_backends`: the same file gives the same registry)."""
    ggml = ctypes.CDLL(os.fspath(ggml_library))
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    for function in (ggml.ggml_backend_dev_name, ggml.ggml_backend_dev_description):
        function.argtypes = [ctypes.c_void_p]
        function.restype = ctypes.c_char_p
    ggml.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_type.restype = ctypes.c_int
    ggml.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    ggml.ggml_backend_dev_memory.restype = None
    ggml.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_reg_name.restype = ctypes.c_char_p
    devices = []
    for index in range(ggml.ggml_backend_dev_count()):
        device = ggml.ggml_backend_dev_get(index)
        if ggml.ggml_backend_dev_type(device) not in _DEVICE_TYPES:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            BackendDevice(
                backend=ggml.ggml_backend_reg_name(
                    ggml.ggml_backend_dev_backend_reg(device)
                ).decode(),
                name=ggml.ggml_backend_dev_name(device).decode(),
                description=ggml.ggml_backend_dev_description(device).decode(),
                memory_total=total.value,
                memory_free=free.value,
            )
        )
    return tuple(devices)


def cuda_failure(module: Path, backends: Sequence[str], log_lines: Sequence[str]) -> str:
    """Why the CUDA backend registered no device: the dynamic loader's error for a module ggml
    did not load (a library it needs is missing: the driver's libcuda.so.1, or a runtime
    library), else llama.cpp's own log line. Raises `ModuleNotLoaded` when the loader refused
    the module itself (damaged, or built for another ggml): that is the overlay's fault."""
    if "CUDA" not in backends:
        try:
            ctypes.CDLL(os.fspath(module))
        except OSError as error:
            reason = str(error)
            if reason.startswith(os.fspath(module)):
                msg = f"the loader refused the CUDA backend module: {reason}"
                raise ModuleNotLoaded(msg) from None
            return reason
        said = [line.strip() for line in log_lines if module.name in line]
        msg = f"llama.cpp did not load the CUDA backend module {module.name}" + (
            f": {said[-1]}" if said else ""
        )
        raise ModuleNotLoaded(msg)
    said = [
        line.strip()
        for line in log_lines
        if "cuda" in line.lower()
        and any(word in line.lower() for word in ("fail", "error", "insufficient"))
    ]
    return said[-1] if said else "the CUDA backend loaded but registered no device"


def _short(name: str) -> str:
    return name.lower().removeprefix("nvidia ").strip()


def check_cuda_devices(gpus: Sequence[GpuInfo], result: ProbeResult | None) -> list[str]:
    """Raise `NoCudaDevice` unless the probe's CUDA devices include the GPUs NVML reported
    (same name, VRAM within 10 %); return a note for each GPU CUDA does not show.

    A probe that reported no details (`None`, or a record from before devices were reported:
    no devices and no CUDA error) cannot be checked: no notes."""
    if result is None or not gpus or (not result.gpu_devices and result.cuda_error is None):
        return []
    cuda = [device for device in result.gpu_devices if device.backend == "CUDA"]
    unmatched = list(cuda)
    missing = []
    for gpu in gpus:
        total = gpu.vram_total_mb * 2**20
        match = next(
            (
                device
                for device in unmatched
                if _short(device.description) == _short(gpu.name)
                and device.memory_total >= total * (1 - VRAM_TOLERANCE)
            ),
            None,
        )
        if match is None:
            missing.append(gpu)
        else:
            unmatched.remove(match)
    if len(missing) < len(gpus):
        return [
            f"NVML sees {gpu.name} ({gpu.uuid}) but CUDA does not: it runs on the other GPUs"
            for gpu in missing
        ]
    names = ", ".join(gpu.name for gpu in gpus)
    if cuda:
        seen = ", ".join(
            f"{device.description} ({device.memory_total // 2**20} MiB)" for device in cuda
        )
        why = f"CUDA reports other devices: {seen}"
    else:
        why = f"CUDA reports no device: {result.cuda_error or 'no reason given'}"
    msg = (
        f"NVML sees {names} but {why}; running on the CPU build until the NVIDIA driver "
        "changes (check that the driver is installed and loaded: nvidia-smi)"
    )
    raise NoCudaDevice(msg)
