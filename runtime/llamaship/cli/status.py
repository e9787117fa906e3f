"""`llamaship status`: what the last launch decided and why, as it wrote it (not recomputed)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from llamaship_contract.launch import LaunchStatus
from llamaship_contract.textsafe import printable

# Long enough for a decision's reason; still one line per field.
_TEXT_LIMIT = 1000


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show the last launch's decision, events and health",
        description="Show what the last launch decided (CPU or CUDA) and why, its events, the "
        "llama.cpp build and overlay it ran, and how far it got (booting, serving, "
        "loading, healthy, ended), as that launch recorded it.",
    )
    parser.add_argument("--json", action="store_true", help="print the launch status as JSON")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _health(status: LaunchStatus, running: bool) -> str:
    process = status.process
    phase = process.phase
    if status.error is not None:
        return f"failed: {printable(status.error, _TEXT_LIMIT)}"
    if phase in ("ended", "ended-by-signal"):
        return f"{phase} (it stopped without a crash)"
    if running:
        return f"{phase} (running, pid {process.pid})"
    if phase in ("booting", "loading"):
        doing = "loading its first model" if phase == "loading" else "starting"
        return (
            f"died while {doing} (a crash or a kill): it counts against the overlay (boot counting)"
        )
    return f"{phase}, then the process ended without saying so (killed?): not counted"


def format_status(status: LaunchStatus, running: bool) -> str:
    """The status for people; text from the launch (reasons, events) is escaped."""

    def safe(text: str) -> str:
        return printable(text, _TEXT_LIMIT)

    process = status.process
    lines = [
        f"last launch:  {_when(process.started)} (pid {process.pid})",
        f"decision:     {status.decision}: {safe(status.reason)}",
    ]
    if status.variant is not None:
        lines.append(
            f"running:      {status.variant}, llama.cpp {status.llama_cpp_version}"
            + (f", overlay {safe(status.overlay_version)}" if status.overlay_version else "")
        )
    else:
        lines.append("running:      nothing yet (llama.cpp was not imported)")
    lines.append(f"health:       {_health(status, running)}")
    if process.model is not None:
        lines.append(f"model:        {safe(process.model)}")
    if status.tries_left is not None:
        lines.append(
            f"boot count:   {status.tries_left} tries left before the overlay is quarantined"
        )
    if status.upgrade_available:
        lines.append("upgrade:      a CUDA overlay is available (`llamaship overlay install`)")
    lines.append(f"updated:      {_when(status.updated)}")
    lines.append("events:" + ("" if status.events else "       none"))
    lines += [f"  - {safe(event)}" for event in status.events]
    if status.log_file is not None:
        lines.append(f"log file:     {safe(status.log_file)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from llamaship.config import executable_dir, load_settings
    from llamaship.launch.boot_counting import ProcessIdentity, is_running
    from llamaship.launch.status import read_status
    from llamaship.paths import DataDirs

    settings = load_settings(args.env_file, bundle_dir=executable_dir())
    status = read_status(DataDirs(settings.home))
    running = status is not None and is_running(
        ProcessIdentity(status.process.pid, status.process.create_time)
    )
    if args.json:
        value: dict[str, Any] = {
            "launch": status.model_dump(mode="json", by_alias=True) if status else None,
            "running": running,
        }
        print(json.dumps(value, indent=2))
    elif status is None:
        print(f"No launch recorded yet under {settings.home}: run `llamaship serve`.")
    else:
        print(format_status(status, running))
    return 0
