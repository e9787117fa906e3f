"""A signed overlay release (layers + releases.json) built by the real pipeline, and a GPU
machine (fake driver) that the overlay fits."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures_overlay import BuiltOverlay
from hardware.fakes import FakeGpu, FakeHardware, llamaship_command
from llamaship_build.release_index import write_release_index

RTX_2080 = FakeGpu(
    "NVIDIA GeForce RTX 2080", "GPU-2080cccc-0000-0000-0000-000000000000", 8192, 7900, "7.5"
)
CUDA13_DRIVER = "580.95.05"


@dataclass(frozen=True)
class Release:
    """A directory holding both layers and the signed index, and the key that trusts it."""

    directory: Path
    public_key: str

    @property
    def index(self) -> Path:
        return self.directory / "releases.json"


@pytest.fixture(scope="session")
def overlay_release(
    built_overlay: BuiltOverlay, tmp_path_factory: pytest.TempPathFactory
) -> Release:
    directory = tmp_path_factory.mktemp("release")
    for path in built_overlay.out_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, directory / path.name)
    write_release_index(
        directory,
        [
            [
                directory / built_overlay.runtime_manifest.name,
                directory / built_overlay.llama_manifest.name,
            ]
        ],
        serial=7,
        signing_key_b64=built_overlay.keys.private,
        base_url="",
    )
    return Release(directory, built_overlay.keys.public)


@pytest.fixture
def gpu_machine(hardware: FakeHardware, overlay_release: Release) -> FakeHardware:
    """A fake machine with an RTX 2080 (compute 7.5) and a CUDA 13 driver that trusts the key."""
    hardware.gpus = [RTX_2080]
    hardware.driver_version = CUDA13_DRIVER
    hardware.cuda_version = 13000
    hardware.install_nvml()
    return hardware


def install_overlay(machine: FakeHardware, release: Release, *command: str) -> None:
    """`llamaship overlay install DIR` trusting the release's key (or the given command
    prefix, e.g. the test bundle's, which trusts it since it was built with it)."""
    prefix = list(command) or llamaship_command(release.public_key)
    result = subprocess.run(
        [*prefix, "overlay", "install", str(release.directory)],
        env=machine.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
