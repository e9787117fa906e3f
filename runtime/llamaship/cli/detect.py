"""`llamaship detect`: show what the launch knows about the GPUs (NVIDIA driver and Vulkan)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the contract (pydantic) is imported only when a command runs
    from llamaship_contract.detection import DetectionReport, VulkanReport


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="detect NVIDIA and Vulkan GPUs (cached between launches)",
        description="Detect the NVIDIA driver, the Vulkan devices and the GPUs the way the "
        "launch does. "
        "Exits 0 whatever the hardware.",
    )
    parser.add_argument("--json", action="store_true", help="print the detection report as JSON")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="ignore the detection cache (the fresh report is cached again)",
    )


def format_report(report: DetectionReport) -> str:
    """A short summary of `report` for people."""
    origin = f"{report.source}, cached" if report.cached else report.source
    if report.gpus:
        driver = report.driver_version or "unknown"
        cuda = report.cuda_driver_version or "unknown"
        lines = [f"NVIDIA driver {driver}, CUDA {cuda} (from {origin})"]
        lines += [
            f"  GPU {gpu.index}: {gpu.name}, {gpu.vram_total_mb} MB VRAM "
            f"({gpu.vram_free_mb} MB free), compute capability "
            f"{gpu.compute_capability}"
            for gpu in report.gpus
        ]
    else:
        lines = [f"No NVIDIA GPU detected (from {origin})."]
    lines += [f"  note: {error}" for error in report.errors]
    return "\n".join([*lines, *_vulkan_lines(report.vulkan)])


def _vulkan_lines(vulkan: VulkanReport) -> list[str]:
    if vulkan.devices:
        loader = f"loader {vulkan.loader_version}" if vulkan.loader_version else vulkan.source
        lines = [f"Vulkan: {len(vulkan.devices)} device(s) (from {loader})"]
        for device in vulkan.devices:
            vendor = device.vendor or f"vendor {device.vendor_id:#x}"
            free = "" if device.memory_free_mb is None else f" ({device.memory_free_mb} MB free)"
            software = " (software)" if device.device_type == "cpu" else ""
            lines.append(
                f"  Vulkan {device.index}: {device.name}, {device.device_type}{software}, "
                f"{vendor}, {device.memory_mb} MB{free}, Vulkan {device.api_version}, "
                f"driver {device.driver_version}"
            )
    else:
        lines = ["No Vulkan device detected."]
    return lines + [f"  note: {error}" for error in vulkan.errors]


def run(args: argparse.Namespace) -> int:
    import json

    from llamaship.config import executable_dir, load_settings
    from llamaship.detect import load_or_detect
    from llamaship.launch.plan import detection_versions, release_decision
    from llamaship.overlay.store import OverlayStore
    from llamaship.paths import DataDirs

    settings = load_settings(args.env_file, bundle_dir=executable_dir())
    dirs = DataDirs(settings.home)
    store = OverlayStore(dirs)
    report = load_or_detect(
        settings, dirs, detection_versions(store.active()), refresh=args.refresh
    )
    if args.json:
        print(json.dumps(report.model_dump(mode="json", by_alias=True), indent=2))
    else:
        from llamaship.detect.vulkan_choice import vulkan_device_choice

        vulkan = vulkan_device_choice(report, settings)
        decision = release_decision(settings, report, args.trusted_keys)
        print(format_report(report))
        print(f"Vulkan device choice: {vulkan.reason}")
        print(f"Decision: {decision.variant} ({decision.reason})")
    return 0
