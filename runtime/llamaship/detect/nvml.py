"""Detection through NVML (nvidia-ml-py), the driver's own management library."""

from __future__ import annotations

from llamaship.detect.errors import SourceFailed, SourceMissing
from llamaship_contract.detection import DetectionReport, GpuInfo

_MIB = 1024 * 1024


def format_cuda_version(encoded: int) -> str:
    """NVML encodes CUDA versions as 1000 * major + 10 * minor: 12020 -> "12.2"."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def read_nvml() -> DetectionReport:
    """Ask NVML for the driver and every GPU; raise SourceMissing or SourceFailed."""
    try:
        import pynvml  # only the cold launch pays for this import
    except ImportError:
        msg = "NVML: nvidia-ml-py is not installed in this Python; reinstall llamaship"
        raise SourceMissing(msg) from None

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        msg = "NVML: the NVIDIA driver library (libnvidia-ml.so.1 / nvml.dll) was not found"
        raise SourceMissing(msg) from None
    except pynvml.NVMLError as error:
        raise SourceFailed(f"NVML: initialisation failed: {error}") from None
    try:
        driver_version = pynvml.nvmlSystemGetDriverVersion()
        cuda_driver_version = format_cuda_version(pynvml.nvmlSystemGetCudaDriverVersion())
        gpus: list[GpuInfo] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=pynvml.nvmlDeviceGetName(handle),
                    uuid=pynvml.nvmlDeviceGetUUID(handle),
                    vram_total_mb=int(memory.total) // _MIB,
                    vram_free_mb=int(memory.free) // _MIB,
                    compute_capability=f"{major}.{minor}",
                )
            )
    except pynvml.NVMLError as error:
        raise SourceFailed(f"NVML: reading the GPUs failed: {error}") from None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass  # the answer (or the error above) is what matters; the process moves on
    return DetectionReport(
        source="nvml",
        driver_version=driver_version,
        cuda_driver_version=cuda_driver_version,
        gpus=tuple(gpus),
    )
