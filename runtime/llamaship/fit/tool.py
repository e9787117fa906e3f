"""llama.cpp's own fit, `llama-fit-params`, run in a subprocess and read defensively.

The tool dry-loads the model (no allocation), measures its buffers per device and prints the
arguments that fit: `-c N -ngl N [-ts a,b] [-ot "pattern=BUFT,..."]`. A crash, a hang or output
we do not understand raises `FitToolError`: the caller falls back to the estimate.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

from llamaship.fit.errors import FitToolError
from llamaship.io.group_run import run_in_group

TOOL_NAME = "llama-fit-params.exe" if sys.platform == "win32" else "llama-fit-params"
DEFAULT_TIMEOUT = 60.0
_MIB = 1 << 20
_ARGS_LINE = re.compile(r"^-c \d+ -ngl -?\d+\b")
# "  - CUDA0 (NVIDIA GeForce RTX 4090): 48 layers (34 overflowing),  19187 MiB used,  1199 MiB free"
# A description may hold parentheses: "Vulkan0 (llvmpipe (LLVM 15.0.6, 256 bits)): 33 layers, ..."
_DEVICE_LINE = re.compile(
    r"-\s+(?P<name>[A-Za-z]+\d+)\s+\((?P<description>.*)\)\s*:\s*(?P<layers>\d+) layers"
    r"(?:\s*\(\s*\d+ overflowing\))?,\s*(?P<used>\d+) MiB used,\s*(?P<free>-?\d+) MiB free"
)
_DEVICE_TOTAL = re.compile(r"projected to use (\d+) MiB of device memory")
_HOST_ONLY = re.compile(r"projected to use (\d+) MiB of host memory")
_OVERRIDE = re.compile(r"^[^=\s]+=[A-Za-z][\w-]*$")


@dataclass(frozen=True)
class DeviceUse:
    """One device line of the tool's log: its planned layers and MiB used and left free."""

    name: str
    description: str
    layers: int
    used_mib: int
    free_mib: int


@dataclass(frozen=True)
class ToolFit:
    """The tool's answer, parsed: the fitted arguments and what its log says about devices."""

    n_ctx: int
    n_gpu_layers: int
    tensor_split: tuple[float, ...] | None
    tensor_overrides: tuple[str, ...]
    devices: tuple[DeviceUse, ...]
    device_total_mib: int | None
    host_mib: int | None  # the projection when the tool fits host memory only (no GPU)
    saw_gpu: bool
    seconds: float


def find_tool(lib_dir: Path) -> Path | None:
    """The `llama-fit-params` shipped beside the llama.cpp libraries in `lib_dir`, if any."""
    candidate = lib_dir / TOOL_NAME
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FitToolError(f"llama-fit-params printed {flag} {text!r}, not a number") from None


def parse_arguments(line: str) -> tuple[int, int, tuple[float, ...] | None, tuple[str, ...]]:
    """`-c N -ngl N [-ts a,b,...] [-ot "p=B,..."]` -> n_ctx, n_gpu_layers, split, overrides."""
    try:
        tokens = shlex.split(line) if '"' in line else line.split()
    except ValueError:
        raise FitToolError(f"llama-fit-params printed an unreadable line: {line[:200]!r}") from None
    if len(tokens) % 2:
        raise FitToolError(f"llama-fit-params printed an odd argument list: {line[:200]!r}")
    values = dict(zip(tokens[::2], tokens[1::2], strict=True))
    unknown = sorted(set(values) - {"-c", "-ngl", "-ts", "-ot"})
    if unknown or "-c" not in values or "-ngl" not in values:
        raise FitToolError(f"llama-fit-params printed unexpected arguments: {line[:200]!r}")
    n_ctx = _int(values["-c"], "-c")
    n_gpu_layers = _int(values["-ngl"], "-ngl")
    if n_ctx < 0 or n_gpu_layers < -1:
        raise FitToolError(f"llama-fit-params printed impossible values: {line[:200]!r}")
    split: tuple[float, ...] | None = None
    if "-ts" in values:
        split = tuple(float(_int(part, "-ts")) for part in values["-ts"].split(","))
        if any(share < 0 for share in split) or not any(split):
            raise FitToolError(f"llama-fit-params printed an impossible split: {values['-ts']!r}")
    overrides: tuple[str, ...] = ()
    if "-ot" in values:
        overrides = tuple(values["-ot"].split(","))
        bad = [item for item in overrides if not _OVERRIDE.match(item)]
        if bad:
            raise FitToolError(f"llama-fit-params printed unreadable tensor overrides: {bad[:3]}")
    return n_ctx, n_gpu_layers, split, overrides


def parse_output(stdout: str, stderr: str, seconds: float = 0.0) -> ToolFit:
    """Read the tool's stdout (the fitted arguments) and stderr (its log of the devices)."""
    lines = [line.strip() for line in stdout.splitlines() if _ARGS_LINE.match(line.strip())]
    if len(lines) != 1:
        shown = stdout.strip()[-200:]
        raise FitToolError(f"llama-fit-params printed no fitted arguments (stdout: {shown!r})")
    n_ctx, n_gpu_layers, split, overrides = parse_arguments(lines[0])
    devices = tuple(
        DeviceUse(
            match["name"],
            match["description"].strip(),
            int(match["layers"]),
            int(match["used"]),
            int(match["free"]),
        )
        for match in _DEVICE_LINE.finditer(stderr)
    )
    totals = _DEVICE_TOTAL.findall(stderr)
    host = _HOST_ONLY.search(stderr)
    saw_gpu = bool(devices or totals) and host is None
    return ToolFit(
        n_ctx=n_ctx,
        n_gpu_layers=n_gpu_layers,
        tensor_split=split,
        tensor_overrides=overrides,
        devices=devices,
        device_total_mib=int(totals[0]) if totals else None,
        host_mib=int(host.group(1)) if host else None,
        saw_gpu=saw_gpu,
        seconds=seconds,
    )


def tool_command(tool: Path, model: Path, n_ctx: int, margin_mb: int) -> list[str]:
    """The command line: the context is fixed by the caller; margins per device in MiB.

    The context settings are llama-cpp-python's own (micro-batches of 512, no flash attention,
    full-size SWA cache), not llama.cpp's CLI defaults, so the tool measures what will load.
    """
    return [
        str(tool),
        "--model",
        str(model),
        "-c",
        str(n_ctx),
        "--fit-target",
        str(margin_mb),
        "-b",
        "512",
        "-ub",
        "512",
        "-fa",
        "off",
        "--swa-full",
        "-v",
    ]


def _environment(tool: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The tool's environment: this process's with `extra` added, the tool's own directory
    first on the loader's search path.

    The loader searches LD_LIBRARY_PATH before the tool's RUNPATH, and a frozen bundle puts
    its own libraries there: the tool must get the libllama it sits beside. What activation
    put there (a CUDA overlay's runtime folder) stays, after it.
    """
    variable = "PATH" if sys.platform == "win32" else "LD_LIBRARY_PATH"
    base = {**os.environ, **extra}
    entries = [os.fspath(tool.parent)]
    if base.get(variable):
        entries.append(base[variable])
    return {**base, variable: os.pathsep.join(entries)}


def run_tool(
    tool: Path,
    model: Path,
    n_ctx: int,
    margin_mb: int,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    extra_env: Mapping[str, str] | None = None,
) -> ToolFit:
    """Run the tool in its own process group (killed whole on timeout) and parse its answer.

    `extra_env`: variables added to the tool's environment, e.g. GGML_VK_VISIBLE_DEVICES to
    show it the Vulkan devices the server will use, or a CUDA overlay's module and runtime
    folder where this process has not activated it (`llamaship fit`).
    """
    command = tool_command(tool, model, n_ctx, margin_mb)
    started = perf_counter()
    try:
        # The tool finds the ggml backends beside itself (its own directory is searched).
        returncode, stdout, stderr = run_in_group(
            command, timeout, cwd=tool.parent, env=_environment(tool, extra_env or {})
        )
    except OSError as error:
        raise FitToolError(f"llama-fit-params could not be started: {error}") from None
    except subprocess.TimeoutExpired:
        msg = f"llama-fit-params did not finish within {timeout:g} s and was killed"
        raise FitToolError(msg) from None
    seconds = perf_counter() - started
    out = stdout.decode("utf-8", "replace")
    err = stderr.decode("utf-8", "replace")
    if returncode != 0:
        last = next((line for line in reversed(err.splitlines()) if line.strip()), "")
        msg = f"llama-fit-params failed (exit status {returncode}): {last[-300:]}"
        raise FitToolError(msg)
    return parse_output(out, err, seconds)


def mib_to_bytes(mib: int) -> int:
    """MiB as the tool prints them, in bytes."""
    return mib * _MIB
