"""Measure a GPU variant against the CPU build: one child process each, bounded in time.

Each child is this program's hidden `measure-variant` command (the bundle's `backend`
executable, or `python -m llamaship`), so native crashes and hangs stay out of the server. A
variant is an environment and arguments (`VariantSetup`): the CPU build runs with no GPU
backend module and no layers offloaded; Vulkan loads the backend module named by
`GGML_BACKEND_PATH` (ggml's loader honours it) on the device `GGML_VK_VISIBLE_DEVICES` names;
CUDA loads a CUDA overlay's module the same way, with its runtime's folder first on the
loader's search path. The GPU variant runs first with half the time bound, the CPU
build after it with what is left; a child that outlives its share is killed with its process
group, and the measurement fails with one line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic

from llamaship.io.group_run import run_in_group, self_command
from llamaship.launch.activate import cuda_environment
from llamaship.launch.launch_env import BACKEND_PATH
from llamaship.measure.cache import model_identity
from llamaship.measure.verdict import judge_speeds
from llamaship_contract.errors import LlamashipError
from llamaship_contract.measure import (
    GpuVariant,
    MeasuredVariant,
    VariantMeasurement,
    VariantSpeed,
)

logger = logging.getLogger(__name__)

VULKAN_DEVICES_VARIABLE = "GGML_VK_VISIBLE_DEVICES"
TOTAL_SECONDS = 60.0
PROMPT_TOKENS = 128  # pp128: fits the bound on a slow CPU with a 7B model
GENERATED_TOKENS = 128  # tg128, cut short by the generation time share
GENERATION_SHARE = 0.25  # of a child's time: generation stops there (after one token)
MEASURE_COMMAND = "measure-variant"

Progress = Callable[[float, str], None]
"""`on_progress(fraction done, what runs now)`."""
Started = Callable[[subprocess.Popen[bytes]], None]
"""`on_child(process)`: a child started (`llamaship.io.group_run.kill_group` ends it)."""


class MeasurementFailed(LlamashipError):
    """A variant's measurement child crashed, hung, failed or printed no result."""


@dataclass(frozen=True)
class VariantSetup:
    """How a child process runs llama.cpp as one variant: its environment and the layers it
    offloads."""

    variant: MeasuredVariant
    n_gpu_layers: int
    set_env: Mapping[str, str] = field(default_factory=dict)
    unset_env: frozenset[str] = frozenset()

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` without `unset_env`, with `set_env`."""
        kept = {key: value for key, value in base.items() if key not in self.unset_env}
        return {**kept, **self.set_env}


CPU_SETUP = VariantSetup("cpu", 0, unset_env=frozenset({BACKEND_PATH, VULKAN_DEVICES_VARIABLE}))


def vulkan_setup(module: Path, device_index: int, n_gpu_layers: int = -1) -> VariantSetup:
    """The bundle's llama.cpp with the Vulkan backend `module` on device `device_index`."""
    return VariantSetup(
        "vulkan",
        n_gpu_layers,
        set_env={
            BACKEND_PATH: os.fspath(module),
            VULKAN_DEVICES_VARIABLE: str(device_index),
        },
    )


def cuda_setup(module: Path, runtime_lib_dir: Path, n_gpu_layers: int = -1) -> VariantSetup:
    """The bundle's llama.cpp with a CUDA overlay's backend `module` and its runtime libraries
    (found through the search path of this process's environment)."""
    return VariantSetup(
        "cuda",
        n_gpu_layers,
        set_env=cuda_environment(module, runtime_lib_dir, os.environ),
        unset_env=frozenset({VULKAN_DEVICES_VARIABLE}),
    )


@dataclass(frozen=True)
class MeasureRequest:
    """What to measure: `gpu` against the CPU build on `model`, for the driver `driver`."""

    model: Path
    gpu: VariantSetup
    driver: str
    n_threads: int
    total_seconds: float = TOTAL_SECONDS
    n_prompt: int = PROMPT_TOKENS
    n_gen: int = GENERATED_TOKENS

    @property
    def variant(self) -> GpuVariant:
        variant = self.gpu.variant
        if variant == "cpu":
            msg = "a measurement compares a GPU variant with the CPU build, not cpu with itself"
            raise ValueError(msg)
        return variant


def _failure(variant: str, returncode: int, stdout: bytes, stderr: bytes) -> str | None:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the {variant} run crashed ({name})"
    if returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        return f"the {variant} run failed (exit {returncode}): {lines[-1].strip()}"
    return None


def run_child(
    setup: VariantSetup,
    request: MeasureRequest,
    timeout: float,
    *,
    command: Sequence[str],
    env: Mapping[str, str],
    on_child: Started | None = None,
) -> VariantSpeed:
    """One variant's run in a child process; `MeasurementFailed` with one line otherwise."""
    argv = [
        *command,
        MEASURE_COMMAND,
        "--variant",
        setup.variant,
        "--model",
        os.fspath(request.model),
        "--n-gpu-layers",
        str(setup.n_gpu_layers),
        "--n-threads",
        str(request.n_threads),
        "--n-prompt",
        str(request.n_prompt),
        "--n-gen",
        str(request.n_gen),
        "--generation-seconds",
        f"{timeout * GENERATION_SHARE:.3f}",
    ]
    try:
        returncode, stdout, stderr = run_in_group(
            argv, timeout, env=setup.environment(env), on_start=on_child
        )
    except subprocess.TimeoutExpired:
        msg = f"the {setup.variant} run did not finish within {timeout:.3g} s and was stopped"
        raise MeasurementFailed(msg) from None
    except OSError as error:
        msg = f"the {setup.variant} run could not start: {error}"
        raise MeasurementFailed(msg) from None
    failure = _failure(setup.variant, returncode, stdout, stderr)
    if failure is not None:
        raise MeasurementFailed(failure)
    last_line = (stdout.decode(errors="replace").strip().splitlines() or [""])[-1]
    try:
        return VariantSpeed.model_validate(json.loads(last_line))
    except ValueError:  # not JSON, or not a VariantSpeed (pydantic's errors are ValueErrors)
        msg = f"the {setup.variant} run printed no result (last line: {last_line[:120]!r})"
        raise MeasurementFailed(msg) from None


def _ignore(fraction: float, message: str) -> None:
    return None


def measure_variant(
    request: MeasureRequest,
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    on_progress: Progress = _ignore,
    on_child: Started | None = None,
) -> VariantMeasurement:
    """Time `request.gpu` and the CPU build on the model, GPU first; the verdict with numbers.

    `command` runs this program (default `self_command()`), `env` is the environment the
    variants' settings apply to (default this process's). Raises `MeasurementFailed`."""
    variant = request.variant
    try:
        identity = model_identity(request.model)
    except OSError as error:
        msg = f"cannot read the model {request.model}: {error.strerror or error}"
        raise MeasurementFailed(msg) from None
    program = self_command() if command is None else list(command)
    environment = dict(os.environ if env is None else env)
    started = monotonic()
    speeds: list[VariantSpeed] = []
    for step, setup in enumerate((request.gpu, CPU_SETUP)):
        remaining = request.total_seconds - (monotonic() - started)
        timeout = remaining / 2 if step == 0 else remaining
        message = f"measuring {setup.variant} ({step + 1}/2) on {request.model.name}"
        logger.info("%s, within %.0f s", message, timeout)
        on_progress(step / 2, message)
        speed = run_child(
            setup, request, timeout, command=program, env=environment, on_child=on_child
        )
        logger.info(
            "%s: prompt %.1f tokens/s, generation %.1f tokens/s",
            setup.variant,
            speed.prompt_tokens_per_second,
            speed.tokens_per_second,
        )
        speeds.append(speed)
    gpu, cpu = speeds
    faster, reason = judge_speeds(gpu, cpu)
    seconds = monotonic() - started
    on_progress(1.0, reason)
    return VariantMeasurement(
        model=identity,
        variant=variant,
        driver=request.driver,
        gpu=gpu,
        cpu=cpu,
        faster=faster,
        reason=reason,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=seconds,
    )
