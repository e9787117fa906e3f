"""Vulkan detection: the loader's devices, asked in a child process bounded by a timeout.

A Vulkan driver runs inside the process that asks it, and a broken one hangs or crashes it:
the question goes to `llamaship vulkan-devices` (the bundle's own executable when frozen),
whose process group is killed when it outlives the timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from llamaship.detect.errors import (
    DetectionError,
    LoaderError,
    NoDriver,
    SourceFailed,
    SourceMissing,
)
from llamaship.detect.vulkan_files import icd_manifests, manifest_problems
from llamaship.io.group_run import run_in_group, self_command
from llamaship_contract.detection import VulkanReport
from llamaship_contract.document import parse_document
from llamaship_contract.errors import ContractError

COMMAND = "vulkan-devices"


def _crash_name(returncode: int) -> str:
    if sys.platform == "win32":
        return f"exit status {returncode:#x}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _ask(command: Sequence[str], timeout: float, env: Mapping[str, str] | None) -> VulkanReport:
    """Run the child; its report, or a `DetectionError` saying why none: `SourceMissing` (no
    loader), `NoDriver`, `LoaderError` (the loader answered with an error) or `SourceFailed`."""
    try:
        returncode, stdout, stderr = run_in_group(command, timeout, env=env)
    except OSError as error:
        raise SourceFailed(f"Vulkan: the device query could not be started: {error}") from None
    except subprocess.TimeoutExpired:
        msg = (
            f"Vulkan: the device query did not answer within {timeout:g} s and was killed; "
            "a Vulkan driver is hung (raise GPU_DETECTION_TIMEOUT if it is just slow)"
        )
        raise SourceFailed(msg) from None
    if returncode < 0 or (sys.platform == "win32" and returncode >= 0xC0000000):
        msg = (
            f"Vulkan: the device query crashed ({_crash_name(returncode)}) inside a Vulkan "
            "driver; update or reinstall the GPU driver"
        )
        raise SourceFailed(msg)
    last_line = (stdout.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
    if returncode != 0:
        detail = (stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        raise SourceFailed(f"Vulkan: the device query failed (exit {returncode}): {detail}")
    try:
        answer = json.loads(last_line)
        if "missing" in answer:
            raise SourceMissing(str(answer["missing"]))
        if "no_driver" in answer:
            raise NoDriver(str(answer["no_driver"]))
        if "failed" in answer:
            raise LoaderError(str(answer["failed"]))
        return parse_document(VulkanReport, answer["report"], "the Vulkan device query's answer")
    except (ValueError, TypeError, KeyError, ContractError) as error:
        msg = f"Vulkan: the device query printed no answer ({str(error)[:200]})"
        raise SourceFailed(msg) from None


def detect_vulkan(
    timeout: float,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> tuple[VulkanReport, bool]:
    """The Vulkan devices, and whether the answer is worth caching.

    An answer is worth caching when the loader answered, or when there is no loader, no
    driver or a broken driver manifest: the fingerprint notices when one is installed or
    fixed. A hang, a crash, another error or a loader that lists no device is tried again at
    the next launch. `command` starts the child (default: this program, which runs its
    `vulkan-devices` command); `env` is the child's environment (default: this process's).
    """
    environ = os.environ if env is None else env
    problems = manifest_problems(icd_manifests(environ))
    try:
        report = _ask([*(command or self_command()), COMMAND], timeout, env)
    except (NoDriver, LoaderError) as error:
        if problems:  # the loader skips a broken manifest, or (some versions) fails on it
            return VulkanReport(errors=tuple(problems)), True
        return VulkanReport(errors=(str(error),)), isinstance(error, NoDriver)
    except DetectionError as error:
        conclusive = isinstance(error, SourceMissing)
        return VulkanReport(errors=(*problems, str(error))), conclusive
    if not report.devices:
        return report.model_copy(
            update={"errors": (*problems, "Vulkan: the loader lists no device")}
        ), False
    return report.model_copy(update={"errors": tuple(problems)}), True
