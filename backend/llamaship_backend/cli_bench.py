"""`llamaship bench`: load time and tokens/s with the active plan and on CPU, same build.

A command of this package (registered in `llamaship_backend.cli.COMMANDS`): it runs the engine.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llamaship_contract.bench import BenchRecord, BenchRun


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure load time and tokens/s, active plan versus CPU only",
        description="Boot as `serve` would, then time the model: load, prompt evaluation "
        "(pp) and generation (tg) after a warm-up, with the active plan and, when "
        "it offloads to a GPU, CPU only with the same llama.cpp build. The result "
        "is stored under LLAMASHIP_HOME and shown in /api/capabilities.",
    )
    parser.add_argument("--model", help="GGUF model file (LLAMASHIP_MODEL)")
    parser.add_argument(
        "--n-prompt",
        type=int,
        default=512,
        metavar="N",
        help="prompt tokens evaluated at once (default 512: pp512)",
    )
    parser.add_argument(
        "--n-gen",
        type=int,
        default=128,
        metavar="N",
        help="tokens generated one at a time (default 128: tg128)",
    )
    parser.add_argument(
        "--no-cpu", action="store_true", help="skip the CPU-only run when the active plan offloads"
    )
    parser.add_argument("--json", action="store_true", help="print the record as JSON")


def _row(label: str, run: BenchRun) -> str:
    return (
        f"{label:<14} {run.load_seconds:>7.2f} {run.prompt_tokens_per_second:>11.1f} "
        f"{run.tokens_per_second:>11.1f} {100 * run.overhead_fraction:>9.2f}"
    )


def format_record(record: BenchRecord) -> str:
    """The record as a short table (what `llamaship bench` prints)."""
    active = record.active
    header = (
        f"{'run':<14} {'load s':>7} {f'pp{active.prompt_tokens} t/s':>11} "
        f"{f'tg{active.generated_tokens} t/s':>11} {'overhead%':>9}"
    )
    lines = [
        f"{record.model}: llama.cpp {record.llama_cpp_version} ({record.variant}), "
        f"{record.n_threads} thread(s)",
        f"plan: n_gpu_layers={record.plan.n_gpu_layers}, n_ctx={record.plan.n_ctx} "
        f"({record.plan.source}: {record.plan.reason})",
        header,
        _row(f"active ({record.variant})", active),
    ]
    if record.cpu_is_active:
        lines.append("cpu            = active (the active plan runs on the CPU only)")
    else:
        lines.append(_row("cpu only", record.cpu))
    lines.append(
        f"speed-up: prompt {record.prompt_speedup:.1f}×, "
        f"generation {record.generation_speedup:.1f}× CPU ({record.summary})"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from llamaship.cli.model_file import check_model
    from llamaship.config import executable_dir, load_settings
    from llamaship.errors import ConfigError
    from llamaship.launch.bootstrap import boot

    for name, value in (("--n-prompt", args.n_prompt), ("--n-gen", args.n_gen)):
        if value < 2:
            msg = f"{name} must be at least 2 (got {value})"
            raise ConfigError(msg)
    settings = load_settings(
        args.env_file, {"LLAMASHIP_MODEL": args.model}, bundle_dir=executable_dir()
    )
    if settings.model is None:
        msg = "no model to benchmark: pass --model or set LLAMASHIP_MODEL to a .gguf file"
        raise ConfigError(msg)
    check_model(settings.model)
    state = boot(settings, trusted_keys=args.trusted_keys)
    # Imported after boot, as for `serve`: llama_cpp loads only once the build is chosen.
    from llamaship_backend.benchmark import record_path
    from llamaship_backend.engine import Engine

    engine = Engine(state)
    try:
        record = engine.benchmark(args.n_prompt, args.n_gen, cpu=not args.no_cpu)
    finally:
        engine.close()
    if args.json:
        sys.stdout.write(record.model_dump_json(by_alias=True, indent=2) + "\n")
    else:
        sys.stdout.write(f"{format_record(record)}\nsaved to {record_path(state.dirs.state)}\n")
    return 0
