"""`llamaship detect`: show what the launch knows about the NVIDIA driver and GPUs."""

from __future__ import annotations

import argparse
from typing import Any

from llamaship.detect.report import DetectionReport


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "detect", help="detect NVIDIA GPUs (cached between launches)",
        description="Detect the NVIDIA driver and GPUs the way the launch does. "
                    "Exits 0 whatever the hardware.",
    )
    parser.add_argument("--json", action="store_true", help="print the detection report as JSON")
    parser.add_argument("--refresh", action="store_true",
                        help="ignore the detection cache (the fresh report is cached again)")


def format_report(report: DetectionReport) -> str:
    """A short summary of `report` for people."""
    origin = f"{report['source']}, cached" if report["cached"] else report["source"]
    if report["gpus"]:
        driver = report["driver_version"] or "unknown"
        cuda = report["cuda_driver_version"] or "unknown"
        lines = [f"NVIDIA driver {driver}, CUDA {cuda} (from {origin})"]
        lines += [f"  GPU {gpu['index']}: {gpu['name']}, {gpu['vram_total_mb']} MB VRAM "
                  f"({gpu['vram_free_mb']} MB free), compute capability "
                  f"{gpu['compute_capability']}" for gpu in report["gpus"]]
    else:
        lines = [f"No NVIDIA GPU detected (from {origin})."]
    lines += [f"  note: {error}" for error in report["errors"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from llamaship.bootstrap import detection_versions, offline_decision
    from llamaship.config import default_env_file, resolve_settings
    from llamaship.detect import load_or_detect
    from llamaship.overlay.store import OverlayStore
    from llamaship.paths import DataDirs

    env_file = Path(args.env_file) if args.env_file else default_env_file()
    settings = resolve_settings(env_file=env_file)
    dirs = DataDirs(settings.home)
    store = OverlayStore(dirs)
    report = load_or_detect(settings, dirs, detection_versions(store.active()),
                            refresh=args.refresh)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        decision = offline_decision(report, store)
        print(f"{format_report(report)}\nDecision: {decision.variant} ({decision.reason})")
    return 0
