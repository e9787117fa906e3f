"""The runtime's side of `nox -s bench`: steps timed inside the environment under test.

    python scripts/bench_runtime.py install HOME INDEX PUBLIC_KEY MACHINE --llama-cpp-version V
    python scripts/bench_runtime.py activate MODULE RUNTIME_LIB_DIR
    python scripts/bench_runtime.py cache-hit HOME MODEL RUNS MACHINE --llama-cpp-version V
    python scripts/bench_runtime.py load MODEL N_CTX

The build (`llamaship_build.bench_overlay`, `bench_fit`, `fit_accuracy`) never imports the
runtime: it runs this script with the interpreter under test and reads what it prints. No
`llamaship` command times these steps in-process or accepts the benchmark's own signing key,
hence a script. MACHINE is a detection report (JSON). Each command prints one result line on
stdout; a failure ends with a non-zero exit and a message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# Each step imports what it times on its own, so no step pays for another's imports.
if TYPE_CHECKING:
    from llamaship_contract.detection import DetectionReport


def _machine(text: str) -> DetectionReport:
    from llamaship_contract.detection import DetectionReport
    from llamaship_contract.document import parse_document

    return parse_document(DetectionReport, text, "the benchmark's machine")


def _no_probe(module: Path, runtime_lib_dir: Path, timeout: float) -> None:
    """The install is timed without its probe (the benchmark times file work only)."""


def install(args: argparse.Namespace) -> str:
    """Install the overlay the index offers; the seconds taken and where it went, as JSON."""
    from llamaship.overlay.install import Installer
    from llamaship.overlay.select import Target
    from llamaship.paths import DataDirs

    target = Target(
        platform="linux_x86_64",
        os_name="linux",
        python_tags=("py3",),
        llama_cpp_version=args.llama_cpp_version,
        machine=_machine(args.machine),
    )
    installer = Installer(DataDirs(args.home), [args.public_key], probe=_no_probe)
    started = time.perf_counter()
    overlay = installer.install(args.index, target).overlay
    seconds = time.perf_counter() - started
    return json.dumps(
        {
            "seconds": seconds,
            "module": str(overlay.module),
            "runtime_lib_dir": str(overlay.runtime_lib_dir),
        }
    )


def activate(args: argparse.Namespace) -> str:
    """Activate an installed overlay; the milliseconds taken."""
    from llamaship.launch.activate import activate as activate_overlay

    started = time.perf_counter()
    activate_overlay(args.module, args.runtime_lib_dir)
    return str((time.perf_counter() - started) * 1000)


def cache_hit(args: argparse.Namespace) -> str:
    """Time `plan_load` answered from the fit cache `runs` times; the milliseconds, as JSON."""
    from llamaship.config import resolve_settings
    from llamaship.fit import cache_key, plan_load, remember
    from llamaship_contract.fit import FitPlan

    report = _machine(args.machine)
    settings = resolve_settings(env={"LLAMASHIP_HOME": str(args.home)})
    version = args.llama_cpp_version
    key = cache_key(
        report,
        "cuda",
        args.model,
        4096,
        margin_mb=settings.vram_margin_mb,
        overlay_version="1",
        llama_cpp_version=version,
    )
    remember(
        FitPlan(n_gpu_layers=20, n_ctx=4096, source="fit-tool", reason="bench"), key, args.home
    )
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        plan = plan_load(
            settings,
            report,
            "cuda",
            args.model,
            4096,
            tool=args.home / "no-tool",
            overlay_version="1",
            llama_cpp_version=version,
        )
        times.append((time.perf_counter() - started) * 1000)
        if plan.source != "cache":
            raise SystemExit(f"plan_load did not answer from the fit cache: {plan}")
    return json.dumps(times)


def load(args: argparse.Namespace) -> str:
    """Print the estimate (JSON), then load the model on the CPU with llama.cpp's log on.

    The llama_cpp found first on sys.path (PYTHONPATH) is measured; llama.cpp logs its buffer
    sizes to stderr, which the build reads. Returns nothing more to print.
    """
    from llamaship.fit.estimate import read_shape
    from llamaship.native import load_ggml_backends

    shape = read_shape(args.model)
    estimate = {
        "model": shape.weight_bytes,
        "kv": shape.kv_bytes(args.n_ctx),
        "compute": shape.compute_bytes(args.n_ctx),
    }
    print(json.dumps(estimate), flush=True)
    load_ggml_backends()
    from llama_cpp import Llama

    Llama(
        model_path=str(args.model), n_ctx=args.n_ctx, n_gpu_layers=0, n_threads=1, verbose=True
    ).close()
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("install", help=install.__doc__)
    step.add_argument("home", type=Path)
    step.add_argument("index")
    step.add_argument("public_key")
    step.add_argument("machine")
    step.add_argument("--llama-cpp-version", required=True)
    step.set_defaults(step=install)
    step = commands.add_parser("activate", help=activate.__doc__)
    step.add_argument("module", type=Path)
    step.add_argument("runtime_lib_dir", type=Path)
    step.set_defaults(step=activate)
    step = commands.add_parser("cache-hit", help=cache_hit.__doc__)
    step.add_argument("home", type=Path)
    step.add_argument("model", type=Path)
    step.add_argument("runs", type=int)
    step.add_argument("machine")
    step.add_argument("--llama-cpp-version", required=True)
    step.set_defaults(step=cache_hit)
    step = commands.add_parser("load", help=load.__doc__)
    step.add_argument("model", type=Path)
    step.add_argument("n_ctx", type=int)
    step.set_defaults(step=load)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.step(args)
    if result:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
