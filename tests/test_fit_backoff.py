"""Out-of-memory back-off, with the failure injected at llama-cpp-python's boundary.

`out_of_memory_llama` stands for `llama_cpp.Llama` with one change: a load whose plan does not
fit the fake GPU's memory fails as llama-cpp-python fails it (the same ValueError), after
llama.cpp's own CUDA log lines are written through the log callback llama.cpp holds (fetched
with `llama_log_get`). A load that fits is a real load of gemma3-270m on the CPU build.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures_backend import no_gpu_boot_state, serving
from llamaship.fit import cache_key, lookup, remember
from llamaship.fit.backoff import describe, is_out_of_memory, reduced_plans
from llamaship.launch.outcome import BootState
from llamaship_backend.engine import Engine
from llamaship_backend.errors import ModelLoadFailed
from llamaship_backend.schemas import ChatCompletionRequest
from llamaship_contract.detection import DetectionReport, GpuInfo
from llamaship_contract.fit import FitPlan
from llamaship_contract.launch import LaunchProcess

RTX_2080 = GpuInfo(
    index=0,
    name="NVIDIA GeForce RTX 2080",
    uuid="GPU-2080",
    vram_total_mb=8192,
    vram_free_mb=7900,
    compute_capability="7.5",
)
REPORT = DetectionReport(
    source="nvml", driver_version="580.65.06", cuda_driver_version="13000", gpus=(RTX_2080,)
)
OVERLAY = "0.3.36-cu13.0-1"
N_CTX = 32768
GEMMA_LAYERS = 18
GGML_LOG_ERROR = 4  # enum ggml_log_level in ggml.h

MODEL_OOM_LOG = (
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on device 0: "
    "cudaMalloc failed: out of memory\n",
    "alloc_tensor_range: failed to allocate CUDA0 buffer of size 4294967296\n",
    "llama_model_load: error loading model: unable to allocate CUDA0 buffer\n",
    "llama_model_load_from_file_impl: failed to load model\n",
)
CONTEXT_OOM_LOG = (
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 1024.00 MiB on device 0: "
    "cudaMalloc failed: out of memory\n",
    "alloc_tensor_range: failed to allocate CUDA0 buffer of size 1073741824\n",
    "llama_init_from_model: failed to initialize the context: failed to allocate buffer for "
    "kv cache\n",
)


def plan(**fields: Any) -> FitPlan:
    values: dict[str, Any] = {
        "n_gpu_layers": -1,
        "n_ctx": N_CTX,
        "source": "fit-tool",
        "reason": "llama-fit-params placed all layers",
        "n_layers": GEMMA_LAYERS,
    }
    return FitPlan(**{**values, **fields})


def test_back_off_halves_the_context_then_offloads_fewer_layers_then_cpu_only() -> None:
    steps = [(step.n_ctx, step.n_gpu_layers) for step in reduced_plans(plan(), N_CTX, 18)]
    assert steps == [
        (16384, -1),
        (8192, -1),
        (4096, -1),
        (4096, 13),
        (4096, 8),
        (4096, 3),
        (4096, 0),
    ]
    last = list(reduced_plans(plan(tensor_split=(0.5, 0.5)), N_CTX, 18))[-1]
    assert last.tensor_split is None and last.source == "backoff"
    assert "CPU only" in last.reason


def test_back_off_stops_at_the_models_own_context_when_it_is_smaller() -> None:
    steps = [
        (step.n_ctx, step.n_gpu_layers)
        for step in reduced_plans(plan(n_ctx=2048, n_gpu_layers=10), 2048, 20)
    ]
    assert steps == [(2048, 5), (2048, 0)]
    assert list(reduced_plans(plan(n_ctx=8192, n_gpu_layers=0), 32768, 20)) == [
        plan(
            n_ctx=4096,
            n_gpu_layers=0,
            source="backoff",
            reason="out of memory: context halved to 4096",
        )
    ]


def test_only_memory_failures_count_as_out_of_memory() -> None:
    assert is_out_of_memory("Failed to create llama_context", list(CONTEXT_OOM_LOG))
    assert not is_out_of_memory(
        "Failed to load model from file: x.gguf",
        ["llama_model_load: error loading model: unknown model architecture: 'foo'"],
    )


def emit(lines: tuple[str, ...]) -> None:
    """Write `lines` through the log callback llama.cpp holds now, as llama.cpp itself does."""
    import llama_cpp

    library = llama_cpp.llama_cpp._lib
    library.llama_log_get.argtypes = [
        ctypes.POINTER(llama_cpp.llama_log_callback),
        ctypes.POINTER(ctypes.c_void_p),
    ]
    library.llama_log_get.restype = None
    callback, user_data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    library.llama_log_get(ctypes.byref(callback), ctypes.byref(user_data))
    for line in lines:
        callback(GGML_LOG_ERROR, line.encode(), user_data)


@dataclasses.dataclass
class FakeGpu:
    """What fits: at most `max_layers` layers, a context of at most `max_ctx` tokens."""

    max_layers: int
    max_ctx: int
    attempts: list[tuple[int, int]] = dataclasses.field(default_factory=list)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    """`llama_cpp.Llama` replaced by `out_of_memory_llama`, out of memory beyond `FakeGpu`."""
    import llama_cpp

    gpu = FakeGpu(max_layers=9, max_ctx=8192)

    real_llama = llama_cpp.Llama

    def out_of_memory_llama(model_path: str, **kwargs: Any) -> Any:
        if not kwargs.get("vocab_only"):
            layers, n_ctx = kwargs.get("n_gpu_layers", 0), kwargs.get("n_ctx", 512)
            gpu.attempts.append((n_ctx, layers))
            if layers < 0 or layers > gpu.max_layers:  # llama.cpp loads the weights first
                emit(MODEL_OOM_LOG)
                raise ValueError(f"Failed to load model from file: {model_path}")
            if n_ctx > gpu.max_ctx:
                emit(CONTEXT_OOM_LOG)
                raise ValueError("Failed to create llama_context")
        return real_llama(model_path, **kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", out_of_memory_llama)
    return gpu


def cuda_state(
    home: Path, model: Path, report: DetectionReport = REPORT, n_ctx: int = N_CTX, **changes: Any
) -> BootState:
    """The state of a launch on an RTX 2080 with the CUDA overlay (run here on the CPU build)."""
    state = no_gpu_boot_state(home, {"LLAMASHIP_MODEL": str(model), "LLAMASHIP_N_CTX": str(n_ctx)})
    return dataclasses.replace(
        state,
        report=report,
        decision="cuda",
        active_variant="cuda",
        overlay_version=OVERLAY,
        gpu_offload=True,
        n_gpu_layers=-1,
        **changes,
    )


def cached_plan(state: BootState, model: Path, fitted: FitPlan) -> None:
    """Put `fitted` in the fit cache, as an earlier launch's fit would have."""
    remember(fitted, fit_key(state, model), state.settings.home)


def fit_key(state: BootState, model: Path) -> Any:
    return cache_key(
        REPORT,
        "cuda",
        model,
        N_CTX,
        margin_mb=state.settings.vram_margin_mb,
        overlay_version=OVERLAY,
        llama_cpp_version=state.llama_cpp_version,
    )


@pytest.fixture
def engine_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO):
        yield caplog


def test_out_of_memory_backs_off_to_a_plan_that_loads_and_says_so(
    gemma_model: Path, tmp_path: Path, fake_gpu: FakeGpu, engine_logs: pytest.LogCaptureFixture
) -> None:
    state = cuda_state(tmp_path / "home", gemma_model)
    cached_plan(state, gemma_model, plan())

    with serving(state) as backend, backend.client() as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4},
        )
        capabilities = client.get("/api/capabilities").json()

    assert reply.status_code == 200, reply.text
    # Model buffers do not fit: the context halves to 4096, then layers go 18 -> 13 -> 8.
    assert fake_gpu.attempts == [
        (32768, -1),
        (16384, -1),
        (8192, -1),
        (4096, -1),
        (4096, 13),
        (4096, 8),
    ]
    final = capabilities["load_plan"]
    assert (final["n_gpu_layers"], final["n_ctx"], final["source"]) == (8, 4096, "backoff")
    assert final["reason"] == "out of memory: 8 of 18 layers on the GPU"
    steps = [event for event in capabilities["events"] if event.startswith("out of memory")]
    assert len(steps) == 5
    assert steps[0] == (
        "out of memory loading gemma-3-270m-q4_k_m.gguf with n_ctx=32768, n_gpu_layers=all "
        "(ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on device 0: "
        "cudaMalloc failed: out of memory; alloc_tensor_range: failed to allocate CUDA0 buffer "
        "of size 4294967296; llama_model_load: error loading model: unable to allocate CUDA0 "
        "buffer); retrying with n_ctx=16384, n_gpu_layers=all"
    )
    assert steps[-1].endswith("retrying with n_ctx=4096, n_gpu_layers=8")
    # llama.cpp's own lines went through the log callback into Python logging.
    native = [
        record.getMessage()
        for record in engine_logs.records
        if record.name == "llamaship.llama_cpp"
    ]
    assert native.count(MODEL_OOM_LOG[0].rstrip("\n")) == 5
    # The plan that loaded is what the next launch gets from the fit cache.
    remembered = lookup(state.settings.home, fit_key(state, gemma_model))
    assert remembered is not None
    assert (remembered.n_gpu_layers, remembered.n_ctx) == (8, 4096)


def test_a_context_that_does_not_fit_is_halved_first(
    gemma_model: Path, tmp_path: Path, fake_gpu: FakeGpu
) -> None:
    fake_gpu.max_layers = 100
    state = cuda_state(tmp_path / "home", gemma_model)
    cached_plan(state, gemma_model, plan(n_gpu_layers=GEMMA_LAYERS))
    engine = Engine(state)
    try:
        engine.chat(
            ChatCompletionRequest.model_validate(
                {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            )
        )
    finally:
        engine.close()
    assert fake_gpu.attempts == [(32768, 18), (16384, 18), (8192, 18)]
    assert engine.plan is not None and describe(engine.plan) == "n_ctx=8192, n_gpu_layers=18"
    assert "failed to initialize the context" in state.events[0]


def test_out_of_memory_even_on_cpu_is_one_clear_error(
    gemma_model: Path, tmp_path: Path, fake_gpu: FakeGpu
) -> None:
    fake_gpu.max_ctx = 1024  # below the back-off's floor of 4096
    state = cuda_state(tmp_path / "home", gemma_model)
    cached_plan(state, gemma_model, plan(n_ctx=8192))
    engine = Engine(state)
    with pytest.raises(
        ModelLoadFailed,
        match=r"ran out of memory loading .* even with "
        r"n_ctx=4096, n_gpu_layers=0 .*choose a smaller model or lower "
        r"LLAMASHIP_N_CTX",
    ):
        engine.chat(
            ChatCompletionRequest.model_validate(
                {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            )
        )
    assert fake_gpu.attempts[-1] == (4096, 0)


def test_a_launch_that_died_loading_makes_the_next_start_one_step_lower(
    gemma_model: Path, tmp_path: Path, fake_gpu: FakeGpu
) -> None:
    """Boot counting recorded the plan the dead launch was loading: the engine starts from
    the next back-off step instead of dying the same way until the overlay is quarantined."""
    fake_gpu.max_layers = 100
    died = plan(n_ctx=8192, n_gpu_layers=GEMMA_LAYERS, source="cache")
    failure = LaunchProcess(
        pid=4242,
        create_time=1.0,
        started=datetime.now(UTC),
        phase="loading",
        model=str(gemma_model),
        plan=died.model_dump(mode="json", by_alias=True),
    )
    state = cuda_state(tmp_path / "home", gemma_model, last_failure=failure)
    cached_plan(state, gemma_model, died)
    engine = Engine(state)
    try:
        engine.chat(
            ChatCompletionRequest.model_validate(
                {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            )
        )
    finally:
        engine.close()
    assert fake_gpu.attempts == [(4096, GEMMA_LAYERS)]
    assert state.events[0] == (
        "the launch of pid 4242 died while loading gemma-3-270m-q4_k_m.gguf with n_ctx=8192, "
        "n_gpu_layers=18; starting from n_ctx=4096, n_gpu_layers=18"
    )


def test_a_load_that_fails_for_another_reason_is_not_retried(
    tmp_path: Path, fake_gpu: FakeGpu
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    engine = Engine(no_gpu_boot_state(tmp_path / "home", {"LLAMASHIP_MODEL": str(broken)}))
    with pytest.raises(
        ModelLoadFailed,
        match=r"could not load .*broken.gguf .*llama.cpp said: "
        r".*gguf",
    ):
        engine.chat(
            ChatCompletionRequest.model_validate(
                {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            )
        )
    assert fake_gpu.attempts == [(512, 0)]


def test_benchmark_of_an_offloading_plan_also_runs_cpu_only_with_the_same_build(
    gemma_model: Path, tmp_path: Path, fake_gpu: FakeGpu
) -> None:
    """One run measures the active plan, then CPU only (n_gpu_layers=0), and the speed-up."""
    fake_gpu.max_layers = 100
    state = cuda_state(tmp_path / "home", gemma_model)
    cached_plan(state, gemma_model, plan(n_ctx=4096, n_gpu_layers=GEMMA_LAYERS))
    engine = Engine(state)
    try:
        record = engine.benchmark(32, 8)
    finally:
        engine.close()
    assert not record.cpu_is_active
    assert (record.active.n_gpu_layers, record.cpu.n_gpu_layers) == (GEMMA_LAYERS, 0)
    bench_ctx = 32 + 8 + 16
    assert fake_gpu.attempts[-2:] == [(bench_ctx, GEMMA_LAYERS), (bench_ctx, 0)]
    assert record.generation_speedup == pytest.approx(
        record.active.tokens_per_second / record.cpu.tokens_per_second
    )
    assert record.summary.endswith("× CPU")
    assert (state.dirs.state / "benchmark.json").is_file()
