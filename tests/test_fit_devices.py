"""The fit on any device: free memory read when planning, layers shared by free memory, Vulkan."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hardware.fake_fit_tool import NO_DEVICE, VULKAN_PARTIAL, fit_calls, write_fake_fit_tool
from hardware.fakes import RTX_3060, FakeHardware
from llamaship.config import Settings, resolve_settings
from llamaship.fit import cache_key, plan_load
from llamaship.fit.devices import FitDevice, devices_for, nvidia_devices
from llamaship.fit.estimate import read_shape
from llamaship.fit.place import Gpu, Placement, place
from llamaship_build.gguf_models import Shape, write_llama_gguf
from llamaship_contract.detection import DetectionReport, GpuInfo

MIB = 1 << 20
MARGIN = 1024 * MIB
LLAMA_7B = Shape(n_layer=32, n_embd=4096, n_head=32, n_head_kv=32, n_ff=11008, n_vocab=32000)


def sparse_llama_gguf(path: Path, shape: Shape) -> Path:
    """A llama GGUF of `shape` in Q8_0 whose weights are a hole in a sparse file (no disk used).

    The fit reads only the metadata and the tensor table: a 7B-size model costs nothing here.
    """
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_file_type(7)
    writer.add_token_list([f"t{index}".encode() for index in range(shape.n_vocab)])
    q8 = gguf.GGMLQuantizationType.Q8_0
    sizes: list[int] = []

    def matrix(name: str, rows: int, columns: int) -> None:
        sizes.append(rows * columns // 32 * 34)
        writer.add_tensor_info(
            name, (rows, columns // 32 * 34), np.dtype(np.uint8), sizes[-1], raw_dtype=q8
        )

    def norm(name: str) -> None:
        sizes.append(shape.n_embd * 4)
        writer.add_tensor_info(name, (shape.n_embd,), np.dtype(np.float32), sizes[-1])

    head_dim = shape.n_embd // shape.n_head
    matrix("token_embd.weight", shape.n_vocab, shape.n_embd)
    for layer in range(shape.n_layer):
        prefix = f"blk.{layer}"
        norm(f"{prefix}.attn_norm.weight")
        matrix(f"{prefix}.attn_q.weight", shape.n_embd, shape.n_embd)
        matrix(f"{prefix}.attn_k.weight", shape.n_head_kv * head_dim, shape.n_embd)
        matrix(f"{prefix}.attn_v.weight", shape.n_head_kv * head_dim, shape.n_embd)
        matrix(f"{prefix}.attn_output.weight", shape.n_embd, shape.n_embd)
        norm(f"{prefix}.ffn_norm.weight")
        matrix(f"{prefix}.ffn_gate.weight", shape.n_ff, shape.n_embd)
        matrix(f"{prefix}.ffn_up.weight", shape.n_ff, shape.n_embd)
        matrix(f"{prefix}.ffn_down.weight", shape.n_embd, shape.n_ff)
    norm("output_norm.weight")
    matrix("output.weight", shape.n_vocab, shape.n_embd)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    padded = sum(-(-size // 32) * 32 for size in sizes)
    with path.open("r+b") as file:
        file.truncate(-(-file.seek(0, 2) // 32) * 32 + padded)
    return path


@pytest.fixture(scope="module")
def model_7b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-2-7B-shaped model in Q8_0 (about 7 GB of weights, sparse on disk)."""
    return sparse_llama_gguf(tmp_path_factory.mktemp("gguf") / "llama-7b-q8_0.gguf", LLAMA_7B)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    return write_llama_gguf(
        path,
        Shape(n_layer=16, n_embd=512, n_head=8, n_head_kv=2, n_ff=1536, n_vocab=4096, zeros=True),
    )


def settings_for(home: Path, **env: str) -> Settings:
    return resolve_settings(env={"LLAMASHIP_HOME": str(home), **env})


def cards(*free_mb: int) -> list[Gpu]:
    return [Gpu(index, f"GPU {index}", None, free * MIB) for index, free in enumerate(free_mb)]


def check_budgets(placement: Placement, gpus: list[Gpu]) -> None:
    """Every GPU keeps the margin free: planned bytes (weights, KV, compute) + margin <= free."""
    for device, gpu in zip(placement.devices, gpus, strict=False):
        assert device.planned_bytes is not None
        assert device.planned_bytes + MARGIN <= gpu.free_bytes or device.layers == 0, device


# -- Defect B: the GPUs share the layers by free memory ------------------------------------------


@pytest.mark.parametrize(
    "free_mb",
    [(12288, 4096), (4096, 12288), (6000, 9000, 3000), (2500, 8000, 5000, 11000)],
    ids=["12+4", "4+12", "3-gpus", "4-gpus"],
)
def test_gpus_share_the_layers_in_proportion_to_free_memory(
    model_7b: Path, free_mb: tuple[int, ...]
) -> None:
    shape = read_shape(model_7b)
    gpus = cards(*free_mb)
    placement = place(shape, 4096, gpus, MARGIN)
    assert placement.n_gpu_layers == -1  # the whole model, output layer included, is offloaded
    counts = placement.layers_per_gpu
    total = shape.n_layer + 1
    assert sum(counts) == total
    for count, free in zip(counts, free_mb, strict=True):
        assert abs(count - total * free / sum(free_mb)) < 1, (counts, free_mb)
    # Each card is used and keeps its margin; more free memory, at least as many layers.
    assert all(counts)
    check_budgets(placement, gpus)
    by_free = [counts[index] for index in sorted(range(len(gpus)), key=lambda i: free_mb[i])]
    assert by_free == sorted(by_free)
    assert placement.main_gpu == max(range(len(gpus)), key=lambda index: free_mb[index])


def test_a_card_whose_share_would_break_its_margin_hands_layers_to_the_others(
    model_7b: Path,
) -> None:
    shape = read_shape(model_7b)
    gpus = cards(12288, 1800)  # a share of 4 layers (about 1.1 GB) cannot fit 1800 - 1024 MiB
    placement = place(shape, 4096, gpus, MARGIN)
    assert placement.n_gpu_layers == -1
    assert placement.layers_per_gpu[1] < round(33 * 1800 / (12288 + 1800))
    check_budgets(placement, gpus)


def test_a_model_larger_than_the_gpus_fills_each_within_its_margin(model_7b: Path) -> None:
    shape = read_shape(model_7b)
    gpus = cards(4096, 2560)
    placement = place(shape, 4096, gpus, MARGIN)
    assert 0 < placement.n_gpu_layers < shape.n_layer + 1
    assert all(placement.layers_per_gpu)
    check_budgets(placement, gpus)
    # Nearly full: what is left on each card is less than two layers.
    layer = shape.block_bytes[0] + shape.layer_kv_bytes(4096)[0]
    for device, gpu in zip(placement.devices, gpus, strict=False):
        assert device.planned_bytes is not None
        assert gpu.free_bytes - MARGIN - device.planned_bytes < 2 * layer


def test_more_free_memory_never_means_fewer_layers(model_7b: Path) -> None:
    shape = read_shape(model_7b)
    previous_card, previous_total = 0, 0
    for free in range(1000, 14001, 500):
        placement = place(shape, 4096, cards(6000, free), MARGIN)
        offloaded = sum(placement.layers_per_gpu)
        assert placement.layers_per_gpu[1] >= previous_card, free
        assert offloaded >= previous_total, free
        previous_card, previous_total = placement.layers_per_gpu[1], offloaded


# -- Defect A: free memory is read when planning -------------------------------------------------


def fit_json(hardware: FakeHardware, model: Path, **extra: str) -> dict[str, Any]:
    result = hardware.run_cli(
        "fit", "--model", str(model), "--ctx", "4096", "--variant", "cuda", "--json", **extra
    )
    assert result.returncode == 0, result.stderr
    plan: dict[str, Any] = json.loads(result.stdout)
    return plan


@pytest.fixture
def stale_detection(hardware: FakeHardware) -> FakeHardware:
    """A machine whose cached detection says 12 GB free, while only 3 GB are free now."""
    card = replace(RTX_3060, total_mb=12288, free_mb=12288)
    hardware.gpus = [card]
    hardware.smi_mode = "normal"
    hardware.install_nvml()
    assert hardware.detect()["gpus"][0]["vram_free_mb"] == 12288
    hardware.gpus = [replace(card, free_mb=3072)]  # another program took 9 GB since
    cached = hardware.detect()
    assert cached["cached"] and cached["gpus"][0]["vram_free_mb"] == 12288
    return hardware


def test_the_plan_uses_the_free_memory_of_now_not_the_cached_report(
    stale_detection: FakeHardware, model_7b: Path
) -> None:
    plan = fit_json(stale_detection, model_7b)
    assert plan["source"] == "estimate"
    device = plan["devices"][0]
    assert device["free_bytes"] == 3072 * MIB
    assert device["planned_bytes"] + MARGIN <= 3072 * MIB
    assert 0 < plan["n_gpu_layers"] < 33
    assert "free VRAM read now through NVML" in plan["reason"]
    assert "nvmlDeviceGetMemoryInfo" in stale_detection.nvml_calls()


def test_nvidia_smi_answers_when_nvml_cannot(stale_detection: FakeHardware, model_7b: Path) -> None:
    stale_detection.nvml_fail = "nvmlInitWithFlags:9"
    plan = fit_json(stale_detection, model_7b)
    assert plan["devices"][0]["free_bytes"] == 3072 * MIB
    assert "free VRAM read now through nvidia-smi" in plan["reason"]
    assert "--query-gpu=uuid,memory.free --format=csv,noheader,nounits" in (
        stale_detection.smi_calls()
    )


def test_a_gpu_without_a_free_reading_now_keeps_its_detected_value(
    stale_detection: FakeHardware, model_7b: Path
) -> None:
    stale_detection.nvml_fail = "nvmlInitWithFlags:9"
    (card,) = stale_detection.gpus
    no_reading = f"{card.name}|{card.uuid}|{card.total_mb}|[N/A]|{card.compute_capability}"
    plan = fit_json(stale_detection, model_7b, FAKE_GPUS=no_reading)
    assert plan["devices"][0]["free_bytes"] == 12288 * MIB
    assert "through nvidia-smi; GPU 0: no reading now, free VRAM as detected" in plan["reason"]


def test_the_detected_free_memory_is_used_only_when_nothing_answers_and_the_plan_says_so(
    stale_detection: FakeHardware, model_7b: Path
) -> None:
    stale_detection.nvml_fail = "nvmlInitWithFlags:9"
    stale_detection.smi_mode = "fail"
    plan = fit_json(stale_detection, model_7b)
    assert plan["devices"][0]["free_bytes"] == 12288 * MIB
    assert plan["n_gpu_layers"] == -1
    assert "free VRAM as detected earlier, not read now (NVML: " in plan["reason"]
    assert "nvidia-smi: exit status 9" in plan["reason"]


# -- Any device: the planner takes devices of either backend -------------------------------------


def report_of(*gpus: GpuInfo) -> DetectionReport:
    return DetectionReport(source="nvml", driver_version="550.54.14", gpus=gpus)


LAVAPIPE = FitDevice(
    index=0, name="llvmpipe (LLVM 15.0.6, 256 bits)", free_mb=1900, total_mb=1900, backend="vulkan"
)


def test_the_nvidia_report_becomes_cuda_devices_and_keeps_its_cache_key(
    tmp_path: Path, small_model: Path
) -> None:
    gpu = GpuInfo(
        index=0,
        name="NVIDIA GeForce RTX 3060",
        uuid=RTX_3060.uuid,
        vram_total_mb=12288,
        vram_free_mb=11800,
        compute_capability="8.6",
    )
    report = report_of(gpu)
    assert nvidia_devices(report) == (
        FitDevice(0, "NVIDIA GeForce RTX 3060", 11800, 12288, "cuda", RTX_3060.uuid),
    )
    assert devices_for("cuda", report) == nvidia_devices(report)
    assert devices_for("cpu", report) == ()
    versions: dict[str, Any] = {"margin_mb": 1024, "overlay_version": "1", "llama_cpp_version": "x"}
    key = cache_key(report, "cuda", small_model, 4096, **versions)
    assert key.gpu_uuids == (RTX_3060.uuid,) and key.gpu_vram_total_mb == (12288,)
    vulkan = cache_key(report, "vulkan", small_model, 4096, devices=[LAVAPIPE], **versions)
    assert vulkan.gpu_uuids == ("vulkan:0:llvmpipe (LLVM 15.0.6, 256 bits)",)
    assert vulkan != key


def test_a_vulkan_device_is_planned_by_the_tool_with_its_environment(
    tmp_path: Path, small_model: Path
) -> None:
    tool = write_fake_fit_tool(tmp_path / "bin", VULKAN_PARTIAL)
    plan = plan_load(
        settings_for(tmp_path),
        report_of(),
        "vulkan",
        small_model,
        2048,
        tool=tool,
        devices=[LAVAPIPE],
        tool_env={"GGML_VK_VISIBLE_DEVICES": "0"},
    )
    assert (plan.source, plan.n_gpu_layers, plan.n_ctx) == ("fit-tool", 9, 2048)
    (device,) = plan.devices
    assert device.name == "Vulkan0 (llvmpipe (LLVM 15.0.6, 256 bits))"
    assert (device.layers, device.planned_bytes) == (9, 880 * MIB)
    (call,) = fit_calls(tmp_path / "bin")
    assert "| GGML_VK_VISIBLE_DEVICES=0 |" in call


def test_vulkan_devices_share_the_estimate_by_free_memory(
    tmp_path: Path, small_model: Path
) -> None:
    tool = write_fake_fit_tool(tmp_path / "bin", NO_DEVICE)
    shape = read_shape(small_model)
    compute_mb = shape.compute_bytes(2048) // MIB + 1
    devices = [
        FitDevice(0, "AMD Radeon RX 7600 (RADV NAVI33)", compute_mb + 20, 8192, "vulkan"),
        FitDevice(1, "Intel(R) Arc(tm) A770 Graphics (DG2)", compute_mb + 60, 16384, "vulkan"),
    ]
    plan = plan_load(
        settings_for(tmp_path, LLAMASHIP_VRAM_MARGIN_MB="0"),
        report_of(),
        "vulkan",
        small_model,
        2048,
        tool=tool,
        devices=devices,
    )
    assert plan.source == "estimate"
    assert "llama-fit-params sees no Vulkan device" in plan.reason
    assert "free memory as detected" in plan.reason
    assert plan.tensor_split is not None
    assert plan.tensor_split[0] < plan.tensor_split[1] and plan.main_gpu == 1
    assert [device.name for device in plan.devices[:-1]] == [device.name for device in devices]


def test_a_vulkan_build_without_vulkan_devices_plans_for_the_cpu(
    tmp_path: Path, small_model: Path
) -> None:
    tool = write_fake_fit_tool(tmp_path / "bin")
    plan = plan_load(settings_for(tmp_path), report_of(), "vulkan", small_model, 2048, tool=tool)
    assert (plan.source, plan.n_gpu_layers) == ("cpu", 0)
    assert plan.reason == "no Vulkan device is detected"
    assert fit_calls(tmp_path / "bin") == []
