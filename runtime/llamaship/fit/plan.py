"""The load plan: which source decides, and the `Llama(...)` arguments it gives.

Order: the CPU variant (or no GPU) needs no fit; then the fit cache; then `llama-fit-params`;
then the estimate from the GGUF metadata and the free memory read now. A layer count the user
set always wins: the plan is then advice (`applied=False`), shown but not used.

The planner works on `FitDevice`s of one backend (CUDA or Vulkan): by default those of the
build's variant in the detection report (`devices_for`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from llamaship.fit import cache
from llamaship.fit.devices import BACKEND_LABELS, BACKENDS, FitDevice, devices_for
from llamaship.fit.errors import FitError
from llamaship.fit.tool import (
    DEFAULT_TIMEOUT,
    ToolFit,
    find_tool,
    mib_to_bytes,
    run_tool,
)
from llamaship_contract.detection import DetectionReport
from llamaship_contract.fit import DevicePlan, FitPlan

if TYPE_CHECKING:
    from llamaship.config import Settings

_log = logging.getLogger(__name__)
MIB = 1 << 20


def default_lib_dir() -> Path | None:
    """`llama_cpp/lib` of the bundle's llama_cpp (found, not imported)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "lib"


def _cpu_plan(n_ctx: int, reason: str) -> FitPlan:
    return FitPlan(n_gpu_layers=0, n_ctx=n_ctx, source="cpu", reason=reason)


def _from_tool(fit: ToolFit, gpus: Sequence[FitDevice], n_ctx: int, margin_mb: int) -> FitPlan:
    devices = []
    for position, use in enumerate(fit.devices):
        gpu = gpus[position] if position < len(gpus) else None
        devices.append(
            DevicePlan(
                index=position,
                name=f"{use.name} ({use.description})",
                uuid=gpu.uuid if gpu else None,
                layers=use.layers,
                planned_bytes=mib_to_bytes(use.used_mib),
                free_bytes=mib_to_bytes(max(use.free_mib + use.used_mib, 0)),
            )
        )
    if not devices and fit.device_total_mib is not None and len(gpus) == 1:
        gpu = gpus[0]
        devices.append(
            DevicePlan(
                index=0,
                name=gpu.name,
                uuid=gpu.uuid,
                planned_bytes=mib_to_bytes(fit.device_total_mib),
                free_bytes=mib_to_bytes(gpu.free_mb),
            )
        )
    split = fit.tensor_split
    main_gpu = max(range(len(split)), key=lambda gpu: split[gpu]) if split else 0
    layers = "all layers" if fit.n_gpu_layers < 0 else f"{fit.n_gpu_layers} layers"
    return FitPlan(
        n_gpu_layers=fit.n_gpu_layers,
        n_ctx=fit.n_ctx or n_ctx,
        tensor_split=split,
        main_gpu=main_gpu,
        tensor_overrides=fit.tensor_overrides,
        source="fit-tool",
        reason=f"llama-fit-params placed {layers} leaving {margin_mb} MiB free per GPU",
        margin_mb=margin_mb,
        devices=tuple(devices),
        fit_seconds=round(fit.seconds, 3),
    )


def estimate_plan(
    model_path: Path, devices: Sequence[FitDevice], n_ctx: int, margin_mb: int
) -> FitPlan:
    """A plan from the GGUF metadata and the free memory of `devices` (as given)."""
    from llamaship.fit.estimate import read_shape
    from llamaship.fit.place import Gpu, place

    started = perf_counter()
    shape = read_shape(model_path)
    gpus = [
        Gpu(index=gpu.index, name=gpu.name, uuid=gpu.uuid, free_bytes=gpu.free_mb * MIB)
        for gpu in devices
    ]
    placement = place(shape, n_ctx, gpus, margin_mb * MIB)
    total = shape.n_layer + 1
    if placement.n_gpu_layers == 0:
        reason = (
            f"the estimate finds no layer of {model_path.name} fits the free VRAM less "
            f"{margin_mb} MiB per GPU: CPU only"
        )
    elif placement.n_gpu_layers < 0:
        where = "the GPU" if len(gpus) == 1 else f"{len(gpus)} GPUs by free VRAM"
        reason = f"the estimate fits all {total} layers on {where}"
    else:
        reason = (
            f"partial offload: the estimate fits {placement.n_gpu_layers} of {total} "
            f"layers in the free VRAM less {margin_mb} MiB per GPU"
        )
    return FitPlan(
        n_gpu_layers=placement.n_gpu_layers,
        n_ctx=n_ctx,
        tensor_split=placement.tensor_split,
        main_gpu=placement.main_gpu,
        source="estimate",
        reason=reason,
        margin_mb=margin_mb,
        n_layers=total,
        devices=placement.devices,
        fit_seconds=round(perf_counter() - started, 3),
    )


def _fitted(
    model_path: Path,
    devices: tuple[FitDevice, ...],
    n_ctx: int,
    margin_mb: int,
    tool: Path | None,
    *,
    timeout: float,
    tool_env: Mapping[str, str] | None,
    free_timeout: float,
) -> FitPlan:
    """The tool's plan when it ran and saw the GPUs; else the estimate (the reason says why).

    `free_timeout` bounds reading the free memory now (nvidia-smi) for the estimate.
    """
    from llamaship.fit.free import read_free_now

    why = "llama-fit-params is not shipped with this build"
    if tool is not None:
        try:
            fit = run_tool(tool, model_path, n_ctx, margin_mb, timeout, extra_env=tool_env)
        except FitError as error:
            why = str(error)
        else:
            if fit.saw_gpu:
                return _from_tool(fit, devices, n_ctx, margin_mb)
            label = BACKEND_LABELS[devices[0].backend]
            why = f"llama-fit-params sees no {label} device (no usable driver?)"
    _log.debug("fit: %s; estimating from the GGUF metadata", why)
    free = read_free_now(devices, free_timeout)
    plan = estimate_plan(model_path, free.devices, n_ctx, margin_mb)
    return plan.model_copy(update={"reason": f"{plan.reason} ({why}; {free.note})"})


def plan_load(
    settings: Settings,
    report: DetectionReport | Mapping[str, Any],
    variant: str,
    model_path: Path,
    n_ctx: int,
    *,
    overlay_version: str | None = None,
    llama_cpp_version: str = "",
    tool: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    devices: Sequence[FitDevice] | None = None,
    tool_env: Mapping[str, str] | None = None,
) -> FitPlan:
    """The plan for loading `model_path` with a context of `n_ctx` tokens; never raises FitError.

    `devices` are the GPUs of the build (default: the report's devices of `variant`, see
    `devices_for`). `tool` defaults to the `llama-fit-params` beside the bundle's llama_cpp
    libraries, which inherits this process's environment (an activated overlay's module and
    runtime folder); `tool_env` adds environment variables for it (e.g.
    GGML_VK_VISIBLE_DEVICES). When `settings.n_gpu_layers` is set the returned
    plan is advice (`applied=False`): the engine then uses the user's value
    (`llama_arguments` does that).
    """
    detected = cache.as_report(report)
    gpus = devices_for(variant, detected) if devices is None else tuple(devices)
    margin = settings.vram_margin_mb
    user_layers = settings.n_gpu_layers
    if variant not in BACKENDS or not gpus:
        why = (
            "the CPU build is active"
            if variant not in BACKENDS
            else "no NVIDIA GPU is detected"
            if variant == "cuda"
            else f"no {BACKEND_LABELS[variant]} device is detected"
        )
        return _cpu_plan(n_ctx, why)
    try:
        key = cache.cache_key(
            detected,
            variant,
            model_path,
            n_ctx,
            margin_mb=margin,
            overlay_version=overlay_version,
            llama_cpp_version=llama_cpp_version,
            devices=gpus,
        )
        cached = cache.lookup(settings.home, key)
    except OSError:
        cached = None
    if cached is not None:
        plan = cached
    else:
        if tool is None:
            lib_dir = default_lib_dir()
            tool = find_tool(lib_dir) if lib_dir is not None else None
        try:
            plan = _fitted(
                model_path,
                gpus,
                n_ctx,
                margin,
                tool,
                timeout=timeout,
                tool_env=tool_env,
                free_timeout=settings.detection_timeout,
            )
        except FitError as error:
            plan = FitPlan(
                n_gpu_layers=-1,
                n_ctx=n_ctx,
                source="estimate",
                margin_mb=margin,
                reason=f"no fit possible ({error}): offloading every layer",
            )
    if user_layers is not None:
        return plan.model_copy(
            update={
                "applied": False,
                "reason": f"LLAMACPP_N_GPU_LAYERS={user_layers} is set and wins; the fit advises "
                f"n_gpu_layers={plan.n_gpu_layers} ({plan.reason})",
            }
        )
    return plan


def llama_arguments(plan: FitPlan, settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `Llama(...)`: the plan's when applied, else the user's layers.

    Tensor overrides are not among them: llama-cpp-python 0.3.36 takes none (`plan.
    tensor_overrides` must be set on `model_params.tensor_buft_overrides` by the caller).
    """
    if not plan.applied:
        layers = settings.n_gpu_layers if settings.n_gpu_layers is not None else 0
        return {"n_gpu_layers": layers, "n_ctx": settings.n_ctx}
    arguments: dict[str, Any] = {
        "n_gpu_layers": plan.n_gpu_layers,
        "n_ctx": plan.n_ctx,
        "main_gpu": plan.main_gpu,
    }
    if plan.tensor_split is not None:
        arguments["tensor_split"] = list(plan.tensor_split)
    return arguments
