"""pytest plugin: the fake NVIDIA driver (see tests/hardware/fakes.py), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware.fakes import FakeHardware, compile_fake_icd, compile_fake_nvml, write_fake_smi


@pytest.fixture(scope="session")
def fake_nvml_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake libnvidia-ml.so.1, compiled with gcc once per session."""
    return compile_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


@pytest.fixture(scope="session")
def fake_icd_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake Vulkan driver library, compiled with gcc once per session."""
    return compile_fake_icd(tmp_path_factory.mktemp("fake-icd"))


@pytest.fixture(scope="session")
def fake_smi_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only the fake nvidia-smi."""
    bin_dir = tmp_path_factory.mktemp("fake-smi-bin")
    write_fake_smi(bin_dir)
    return bin_dir


@pytest.fixture
def hardware(
    tmp_path: Path, fake_nvml_build: Path, fake_smi_bin: Path, fake_icd_build: Path
) -> FakeHardware:
    """A machine with no NVIDIA driver and no Vulkan driver yet: call `install_nvml()`, set
    `smi_mode`, add `gpus`; `install_icd()` and `vulkan_devices` for Vulkan."""
    return FakeHardware(
        root=tmp_path,
        nvml_build=fake_nvml_build,
        smi_bin=fake_smi_bin,
        icd_build=fake_icd_build,
    )
