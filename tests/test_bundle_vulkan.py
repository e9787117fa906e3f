"""Vulkan detection from the frozen bundle: the `backend` executable starts itself as the
`vulkan-devices` child (there is no `python -c` in a bundle) and uses the system's loader."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hardware.fakes import FakeHardware


def test_the_bundle_lists_lavapipe_through_the_systems_loader(
    bundle_executable: Path, hardware: FakeHardware
) -> None:
    hardware.system_vulkan = True

    bundled = subprocess.run(
        [str(bundle_executable), "detect", "--json"],
        env=hardware.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert bundled.returncode == 0, bundled.stderr
    vulkan = json.loads(bundled.stdout)["vulkan"]
    assert vulkan["source"] == "loader", vulkan
    assert any(
        device["name"].startswith("llvmpipe") and device["device_type"] == "cpu"
        for device in vulkan["devices"]
    ), vulkan
    bundled_files = [path.name for path in bundle_executable.parent.rglob("*")]
    assert not [name for name in bundled_files if name.startswith("libvulkan")]
