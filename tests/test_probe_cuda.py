"""The probe checks that the CUDA backend really sees the GPUs NVML reports (issue 9 item 10).

The bundle's llama.cpp (the dev venv's portable build: same sdist and flags) loads the genuine
CUDA module of shared/fixtures, with NVIDIA's libcudart as the runtime layer, on a machine
without a usable driver: once with no libcuda.so.1 at all, once with a stub libcuda.so.1 whose
cuInit fails. Either way the probe reports no CUDA device and why, and `check_cuda_devices`
turns that into `NoCudaDevice` (CPU for this driver, no quarantine). A module the loader
refuses itself (damaged, or from another build) fails the probe: that is the overlay's fault.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from hardware.fake_cuda import compile_failing_libcuda, compile_stand_in_cublas
from llamaship.launch.probe import NoCudaDevice, ProbeFailed, check_cuda_devices, run_probe
from llamaship_contract.detection import GpuInfo
from llamaship_contract.launch import BackendDevice, ProbeResult
from llamaship_contract.launch import ProbeResult as RecordedResult

pytestmark = pytest.mark.slow

RTX_2080 = GpuInfo(
    index=0,
    name="NVIDIA GeForce RTX 2080",
    uuid="GPU-2080",
    vram_total_mb=8192,
    vram_free_mb=7900,
    compute_capability="7.5",
)


@pytest.fixture(scope="module")
def cuda_build(
    cuda_module: Path, cudart_wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(module, runtime_lib_dir): the fixture's CUDA module, and NVIDIA's libcudart with a stub
    cuBLAS, as the overlay's two layers lay them out."""
    root = tmp_path_factory.mktemp("cuda-build")
    module, runtime = root / "llama" / "backends" / "libggml-cuda.so", root / "runtime" / "lib"
    module.parent.mkdir(parents=True)
    shutil.copyfile(cuda_module, module)
    runtime.mkdir(parents=True)
    with zipfile.ZipFile(cudart_wheel) as wheel:
        (runtime / "libcudart.so.13").write_bytes(wheel.read("nvidia/cu13/lib/libcudart.so.13"))
    compile_stand_in_cublas(module, runtime)
    return module, runtime


def recorded(result: ProbeResult) -> RecordedResult:
    """The result as the probe record keeps it: the probe's own result (one declaration)."""
    return result


def test_without_libcuda_the_probe_reports_no_cuda_device_and_the_loaders_reason(
    cuda_build: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    result = run_probe(*cuda_build, timeout=120)

    assert "CPU" in result.backends and "CUDA" not in result.backends
    assert result.gpu_devices == ()
    assert "overlays" not in result.llama_cpp_path  # the bundle's own llama.cpp
    assert result.cuda_error is not None and "libcuda.so.1" in result.cuda_error
    with pytest.raises(NoCudaDevice) as raised:
        check_cuda_devices([RTX_2080], recorded(result))
    assert str(raised.value).startswith(
        "NVML sees NVIDIA GeForce RTX 2080 but CUDA reports no device: libcuda.so.1: cannot "
        "open shared object file"
    )
    assert "until the NVIDIA driver changes" in str(raised.value)


def test_with_a_libcuda_whose_cuinit_fails_llama_cpps_own_message_is_the_reason(
    cuda_build: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    driver = compile_failing_libcuda(tmp_path / "driver")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(driver.parent))
    result = run_probe(*cuda_build, timeout=120)

    assert "CUDA" in result.backends  # the backend loaded, and registered no device
    assert result.gpu_devices == ()
    module = cuda_build[0]
    assert str(module.resolve()) in result.libraries  # loaded from the layer by the bundle's ggml
    assert result.cuda_error is not None
    assert result.cuda_error.startswith("ggml_cuda_init: failed to initialize CUDA: ")
    with pytest.raises(
        NoCudaDevice,
        match=r"^NVML sees NVIDIA GeForce RTX 2080 but CUDA "
        r"reports no device: ggml_cuda_init: failed to initialize CUDA: ",
    ):
        check_cuda_devices([RTX_2080], recorded(result))


def test_a_module_the_loader_refuses_itself_fails_the_probe(
    cuda_build: tuple[Path, Path], tmp_path: Path
) -> None:
    """A damaged module (or one built for another ggml) is the overlay's fault, not the
    driver's: the probe fails, which quarantines the overlay."""
    _, runtime = cuda_build
    damaged = tmp_path / "backends" / "libggml-cuda.so"
    damaged.parent.mkdir()
    damaged.write_bytes(b"\x7fELF truncated")
    with pytest.raises(ProbeFailed, match=r"the loader refused the CUDA backend module: .*"):
        run_probe(damaged, runtime, timeout=120)


def test_a_cuda_device_that_matches_nvml_passes_and_a_missing_one_is_a_note() -> None:
    cuda0 = BackendDevice(
        backend="CUDA",
        name="CUDA0",
        description="NVIDIA GeForce RTX 2080",
        memory_total=7982 * 2**20,
        memory_free=7800 * 2**20,
    )
    result = RecordedResult(
        llama_cpp_version="0.3.36",
        llama_cpp_path="x",
        backends=("CPU", "CUDA"),
        devices=("CPU", "CUDA0"),
        gpu_devices=(cuda0,),
    )
    assert check_cuda_devices([RTX_2080], result) == []
    second = RTX_2080.model_copy(
        update={
            "index": 1,
            "uuid": "GPU-second",
            "name": "NVIDIA GeForce RTX 3090",
            "vram_total_mb": 24576,
        }
    )
    assert check_cuda_devices([RTX_2080, second], result) == [
        "NVML sees NVIDIA GeForce RTX 3090 (GPU-second) but CUDA does not: it runs on the other "
        "GPUs"
    ]
    small = cuda0.model_copy(update={"memory_total": 2048 * 2**20})
    with pytest.raises(
        NoCudaDevice, match="CUDA reports other devices: NVIDIA GeForce RTX 2080 \\(2048 MiB\\)"
    ):
        check_cuda_devices([RTX_2080], result.model_copy(update={"gpu_devices": (small,)}))
    # A record written before the probe reported devices cannot be checked: no verdict.
    old = result.model_copy(update={"gpu_devices": ()})
    assert check_cuda_devices([RTX_2080], old) == []
