"""`llamaship fit`: the plan a model load would get (layers, context, GPUs) and its source."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from llamaship_contract.fit import FitPlan


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="show how a model would be placed on the GPUs (layers, context, split)",
        description="Plan a model load as the server would: the fit cache, then llama.cpp's "
        "llama-fit-params, then an estimate from the GGUF metadata. Prints the "
        "plan and where it came from; loads nothing.",
    )
    parser.add_argument("--model", help="GGUF model file (default: LLAMASHIP_MODEL)")
    parser.add_argument(
        "--ctx", type=int, metavar="N", help="context in tokens (default: LLAMASHIP_N_CTX)"
    )
    parser.add_argument(
        "--variant",
        choices=("cpu", "cuda", "vulkan"),
        help="plan for this build (default: what serve runs: cuda when a GPU is detected "
        "and the CUDA overlay is active, else cpu)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / (1 << 20):.0f} MiB"


def format_plan(plan: FitPlan) -> str:
    """The plan for people: the arguments, the source and reason, then each device."""
    layers = "all" if plan.n_gpu_layers < 0 else str(plan.n_gpu_layers)
    lines = [
        f"n_gpu_layers={layers} n_ctx={plan.n_ctx} main_gpu={plan.main_gpu}"
        + (
            f" tensor_split={','.join(f'{share:g}' for share in plan.tensor_split)}"
            if plan.tensor_split
            else ""
        )
        + (f" overrides={','.join(plan.tensor_overrides)}" if plan.tensor_overrides else ""),
        f"from: {plan.source}{'' if plan.applied else ' (advice only, not applied)'}",
        f"why: {plan.reason}",
    ]
    for device in plan.devices:
        where = "host" if device.index < 0 else f"GPU {device.index} {device.name}"
        layer_text = (
            ""
            if device.layers is None
            else (f"{device.layers} layer{'' if device.layers == 1 else 's'}, ")
        )
        free = "" if device.free_bytes is None else f", free {_mib(device.free_bytes)}"
        lines.append(
            f"  {where}: {layer_text}planned {_mib(device.planned_bytes)} (model "
            f"{_mib(device.model_bytes)}, KV {_mib(device.kv_bytes)}, compute "
            f"{_mib(device.compute_bytes)}){free}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from llamaship.cli.model_file import check_model
    from llamaship.config import executable_dir, load_settings
    from llamaship.detect import load_or_detect
    from llamaship.errors import ConfigError
    from llamaship.fit import plan_load
    from llamaship.launch.activate import cuda_environment
    from llamaship.launch.plan import detection_versions, other_build
    from llamaship.overlay.store import OverlayStore
    from llamaship.paths import DataDirs

    settings = load_settings(args.env_file, bundle_dir=executable_dir())
    model = Path(args.model).expanduser() if args.model else settings.model
    if model is None:
        raise ConfigError("No model given: pass --model PATH.gguf or set LLAMASHIP_MODEL.")
    check_model(model)
    if args.ctx is not None and args.ctx < 1:
        raise ConfigError(f"--ctx {args.ctx} is invalid: give a context of 1 token or more.")
    dirs = DataDirs(settings.home)
    active = OverlayStore(dirs).active()
    report = load_or_detect(settings, dirs, detection_versions(active))
    if other_build(active) is not None:  # the launch does not use it either
        active = None
    # What `serve` runs: CUDA needs a GPU and an active overlay, else the bundle's CPU build.
    variant = args.variant or ("cuda" if report.gpus and active is not None else "cpu")
    extra: dict[str, Any] = {}
    if active is not None:
        extra = {
            "overlay_version": active.overlay_version,
            "llama_cpp_version": active.llama_cpp_version,
        }
        if variant == "cuda":  # the bundle's fit tool, with the overlay's module, as serve
            extra["tool_env"] = cuda_environment(active.module, active.runtime_lib_dir, os.environ)
    plan = plan_load(settings, report, variant, model, args.ctx or settings.n_ctx, **extra)
    if args.json:
        print(json.dumps(plan.model_dump(mode="json", by_alias=True), indent=2))
    else:
        print(format_plan(plan))
    return 0
