"""`measure-variant`: a child of `llamaship.measure.run` (not for use by hand).

Loads the model with the variant its environment sets up (the backend module named by
`GGML_BACKEND_PATH`, the device list), times prompt processing and generation, and prints one
JSON line (a `VariantSpeed`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from llamaship_contract.errors import LlamashipError


class VariantRunError(LlamashipError):
    """The variant cannot run the model: no GPU device registered (its numbers would be the
    CPU's), or the model does not load."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "measure-variant",
        help="(internal) time one llama.cpp variant on a model in a child process",
    )
    parser.add_argument("--variant", choices=("cpu", "cuda", "vulkan"), required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n-gpu-layers", type=int, required=True)
    parser.add_argument("--n-threads", type=int, required=True)
    parser.add_argument("--n-prompt", type=int, required=True)
    parser.add_argument("--n-gen", type=int, required=True)
    parser.add_argument("--generation-seconds", type=float, required=True)


def run(args: argparse.Namespace) -> int:
    from llamaship.cli.model_file import check_model
    from llamaship.measure.speed import bench_context, measure
    from llamaship.native import load_ggml_backends
    from llamaship_contract.measure import VariantSpeed

    check_model(args.model)
    from llama_cpp import Llama

    loaded = load_ggml_backends()
    gpu_devices = [name for name in loaded.devices if not name.upper().startswith("CPU")]
    if args.n_gpu_layers != 0 and not gpu_devices:
        msg = (
            f"the {args.variant} backend registered no GPU device (devices: "
            f"{', '.join(loaded.devices) or 'none'})"
        )
        raise VariantRunError(msg)

    def load() -> Llama:
        return Llama(
            model_path=str(args.model),
            n_gpu_layers=args.n_gpu_layers,
            n_ctx=bench_context(args.n_prompt, args.n_gen),
            n_batch=args.n_prompt,
            n_threads=args.n_threads,
            verbose=False,
        )

    try:
        run = measure(
            load,
            args.n_gpu_layers,
            args.n_prompt,
            args.n_gen,
            generation_seconds=args.generation_seconds,
        )
    except ValueError as error:  # llama-cpp-python's "Failed to load model from file"
        msg = f"the {args.variant} build could not load {args.model.name}: {error}"
        raise VariantRunError(msg) from None
    speed = VariantSpeed(
        variant=args.variant,
        n_gpu_layers=args.n_gpu_layers,
        load_seconds=run.load_seconds,
        prompt_tokens=run.prompt_tokens,
        prompt_tokens_per_second=run.prompt_tokens_per_second,
        generated_tokens=run.generated_tokens,
        tokens_per_second=run.tokens_per_second,
    )
    sys.stdout.write(speed.model_dump_json() + "\n")
    return 0
