"""The real llama-fit-params: built from the pinned sdist, run beside the builds' own libraries."""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from hardware.fake_cuda import (
    compile_crashing_module,
    compile_failing_libcuda,
    compile_stand_in_cublas,
)
from llamaship.config import resolve_settings
from llamaship.fit import plan_load
from llamaship.fit.errors import FitToolError
from llamaship.fit.tool import run_tool
from llamaship_build.errors import BuildError
from llamaship_build.fit_tool import (
    SHIPPED,
    TOOL,
    FitTool,
    check_abi,
    dynamic_entries,
    ensure_fit_tool,
    install_fit_tool,
)
from llamaship_build.interpreter import llama_lib_dir
from llamaship_build.llama_wheel import Pin
from llamaship_build.project import Project, cache_dir
from llamaship_contract.detection import DetectionReport, GpuInfo

pytestmark = pytest.mark.slow  # compiles the tool on a cold cache (about 20 minutes)

MB = 1_000_000
RTX_2080 = GpuInfo(
    index=0,
    name="NVIDIA GeForce RTX 2080",
    uuid="GPU-2080",
    vram_total_mb=8192,
    vram_free_mb=7800,
    compute_capability="7.5",
)


@pytest.fixture(scope="session")
def fit_tool() -> FitTool:
    pin = Pin.from_lock(Project.here().requirements / "cpu.txt")
    return ensure_fit_tool(pin, cache_dir() / "fit-tool")


def beside(tool: FitTool, lib_dir: Path, target: Path) -> Path:
    """`lib_dir`'s libraries (linked) and the tool's files in `target`, as builds lay them."""
    target.mkdir()
    for path in lib_dir.iterdir():
        (target / path.name).symlink_to(path)
    install_fit_tool(tool, target)
    return target / TOOL


def test_only_the_tool_its_impl_and_libllama_common_ship(fit_tool: FitTool) -> None:
    names = sorted(path.name for path in fit_tool.files)
    assert names == ["libllama-common.so.0", "libllama-fit-params-impl.so", TOOL]
    assert all(SHIPPED.match(name) for name in names)
    for path in fit_tool.files:
        entries = dynamic_entries(path)
        assert entries.get("RUNPATH") == ["$ORIGIN"], path.name
    needed = set(dynamic_entries(fit_tool.directory / TOOL)["NEEDED"]) | set(
        dynamic_entries(fit_tool.directory / "libllama-common.so.0")["NEEDED"]
    )
    assert {"libllama.so.0", "libggml.so.0", "libggml-base.so.0"} <= needed
    assert fit_tool.size < 8 * MB


def test_the_real_tool_gives_a_cpu_plan_on_the_cpu_build(
    fit_tool: FitTool, gemma_model: Path, tmp_path: Path
) -> None:
    tool = beside(fit_tool, llama_lib_dir(Path(sys.executable)), tmp_path / "lib")
    fit = run_tool(tool, gemma_model, 2048, 1024, timeout=120)
    assert not fit.saw_gpu and fit.devices == ()
    assert fit.n_ctx == 2048
    assert fit.host_mib is not None and fit.host_mib > 235  # the weights alone are 235 MiB
    # On a machine whose driver the CPU build cannot use, the plan comes from the estimate.
    plan = plan_load(
        resolve_settings(env={"LLAMASHIP_HOME": str(tmp_path)}),
        DetectionReport(source="nvml", gpus=(RTX_2080,)),
        "cuda",
        gemma_model,
        2048,
        tool=tool,
        timeout=120,
    )
    assert plan.source == "estimate"
    assert "sees no CUDA device" in plan.reason


def test_the_bundles_tool_loads_the_cuda_module_its_environment_names(
    fit_tool: FitTool, cuda_module: Path, cudart_wheel: Path, gemma_model: Path, tmp_path: Path
) -> None:
    """Host code: the bundle's tool, beside the bundle's libraries, loads a CUDA overlay's module
    from GGML_BACKEND_PATH with the runtime on LD_LIBRARY_PATH, as activation leaves them (no
    GPU here: a stub driver whose cuInit fails, so the CPU answers). A module that crashes on
    loading shows the tool did load what the variable names."""
    tool = beside(fit_tool, llama_lib_dir(Path(sys.executable)), tmp_path / "lib")
    runtime = tmp_path / "runtime"
    with zipfile.ZipFile(cudart_wheel) as wheel:
        runtime.mkdir()
        (runtime / "libcudart.so.13").write_bytes(wheel.read("nvidia/cu13/lib/libcudart.so.13"))
    compile_stand_in_cublas(cuda_module, runtime)
    compile_failing_libcuda(runtime)
    environment = {"GGML_BACKEND_PATH": str(cuda_module), "LD_LIBRARY_PATH": str(runtime)}
    fit = run_tool(tool, gemma_model, 2048, 1024, timeout=120, extra_env=environment)
    assert fit.n_ctx == 2048 and not fit.saw_gpu
    crashing = compile_crashing_module(tmp_path / "crash" / "libggml-cuda.so")
    with pytest.raises(FitToolError, match=r"exit status -11"):
        run_tool(
            tool,
            gemma_model,
            2048,
            1024,
            timeout=120,
            extra_env={**environment, "GGML_BACKEND_PATH": str(crashing)},
        )


def test_libraries_of_another_llama_cpp_are_refused(fit_tool: FitTool, tmp_path: Path) -> None:
    lib_dir = llama_lib_dir(Path(sys.executable))
    other = tmp_path / "other"
    other.mkdir()
    for path in lib_dir.iterdir():
        (other / path.name).symlink_to(path)
    (other / "libllama.so.0").unlink()
    with pytest.raises(BuildError, match=r"libllama.so.0 \(needed by llama-fit-params\) is not"):
        check_abi(fit_tool, other)
    shutil.copyfile(lib_dir / "libggml-base.so.0", other / "libllama.so.0")  # a wrong library
    with pytest.raises(BuildError, match="symbols are not defined"):
        check_abi(fit_tool, other)
