"""The only test doubles of llamaship: a fake NVIDIA driver (libnvidia-ml.so.1 and nvidia-smi)
and a fake Vulkan driver (an ICD the system's real Vulkan loader loads).

Used by the pytest plugin `fixtures_hardware` and by `scripts/bench_detect.py`. Both NVIDIA fakes
read the same description of the hardware from the environment (FAKE_GPUS, FAKE_DRIVER_VERSION,
FAKE_CUDA_VERSION), so a test states the machine once and picks which parts of the driver exist;
the fake ICD reads FAKE_VK_DEVICES and FAKE_VK_MODE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HARDWARE_DIR = Path(__file__).resolve().parent
FAKE_NVML_SOURCE = HARDWARE_DIR / "fake_nvml.c"
NVML_LIBRARY_NAME = "libnvidia-ml.so.1"
FAKE_ICD_SOURCE = HARDWARE_DIR / "fake_vulkan_icd.c"
ICD_LIBRARY_NAME = "libfake_vulkan_icd.so"

# Environment variables of the caller that must not reach a detection subprocess.
_SCRUBBED_PREFIXES = (
    "LLAMASHIP_",
    "FAKE_",
    "GPU_DETECTION_",
    "LLAMACPP_",
    "VK_",
    "GGML_VK_",
    "MESA_VK_",
)
_SCRUBBED_KEYS = frozenset({"LD_LIBRARY_PATH", "LD_PRELOAD", "AUTO_UPGRADE_GPU", "PATH"})
TRUSTING_CLI = HARDWARE_DIR.parent / "trusting_cli.py"


def llamaship_command(trust: str | None = None) -> list[str]:
    """The `llamaship` command, or the test launcher that also trusts the release key `trust`."""
    if trust is None:
        return [sys.executable, "-m", "llamaship_backend"]
    return [sys.executable, str(TRUSTING_CLI), trust]


# A fake nvidia-smi: FAKE_SMI_MODE = normal | garbage | fail | hang.
_FAKE_SMI = '''#!{python}
"""Fake nvidia-smi written by llamaship's tests (tests/hardware/fakes.py)."""
import os
import sys
import time

mode = os.environ.get("FAKE_SMI_MODE", "normal")
if os.environ.get("FAKE_SMI_LOG"):
    with open(os.environ["FAKE_SMI_LOG"], "a") as log:
        log.write(" ".join(sys.argv[1:]) + "\\n")
if mode == "hang":
    child = os.fork()
    if child == 0:
        time.sleep(3600)  # a descendant in the same process group, as a hung driver call leaves
        os._exit(0)
    with open(os.environ["FAKE_SMI_PIDFILE"], "w") as pidfile:
        pidfile.write(f"{{os.getpid()}} {{child}}")
    time.sleep(3600)
if mode == "fail":
    print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
          "Make sure that the latest NVIDIA driver is installed and running.")
    sys.exit(9)
if mode == "garbage":
    print("\\x1b[31mSegmentation fault in libnvidia-ml\\x1b[0m\\n<<garbage>>")
    sys.exit(0)
driver = os.environ.get("FAKE_DRIVER_VERSION", "535.104.05")
cuda = int(os.environ.get("FAKE_CUDA_VERSION", "12020"))
gpus = [entry.split("|") for entry in os.environ.get("FAKE_GPUS", "").split(";") if entry]
queries = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("--query-gpu=")]
if not gpus:
    print("No devices were found")
    sys.exit(6)
if queries:
    for index, (name, uuid, total, free, capability) in enumerate(gpus):
        values = {{"index": index, "name": name, "uuid": uuid, "memory.total": total,
                  "memory.free": free, "compute_cap": capability, "driver_version": driver}}
        print(", ".join(str(values[key]) for key in queries[0].split(",")))
else:
    print("+" + "-" * 89 + "+")
    print(f"| NVIDIA-SMI {{driver}}   Driver Version: {{driver}}   "
          f"CUDA Version: {{cuda // 1000}}.{{cuda % 1000 // 10}}     |")
    print("+" + "-" * 89 + "+")
'''


def compile_fake_nvml(out_dir: Path) -> Path:
    """Build the fake `libnvidia-ml.so.1` into `out_dir` with gcc; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / NVML_LIBRARY_NAME
    command = [
        "gcc",
        "-shared",
        "-fPIC",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Werror",
        f"-Wl,-soname,{NVML_LIBRARY_NAME}",
        "-o",
        str(library),
        str(FAKE_NVML_SOURCE),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return library


def compile_fake_icd(out_dir: Path) -> Path:
    """Build the fake Vulkan driver library into `out_dir` with gcc; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / ICD_LIBRARY_NAME
    command = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"]
    command += ["-fvisibility=hidden", "-o", str(library), str(FAKE_ICD_SOURCE)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return library


def nvidia_driver_version(major: int, minor: int, secondary: int = 0, tertiary: int = 0) -> int:
    """NVIDIA's encoding of its driver version in VkPhysicalDeviceProperties.driverVersion."""
    return major << 22 | minor << 14 | secondary << 6 | tertiary


def vulkan_version(major: int, minor: int, patch: int) -> int:
    """VK_MAKE_API_VERSION(0, major, minor, patch)."""
    return major << 22 | minor << 12 | patch


@dataclass
class FakeVulkanDevice:
    """One device of the fake Vulkan driver; `spec()` is its FAKE_VK_DEVICES entry.

    `device_type` is VkPhysicalDeviceType's number (1 integrated, 2 discrete, 4 cpu);
    `free_mb` None: the device lacks VK_EXT_memory_budget."""

    name: str
    vendor_id: int
    device_type: int
    memory_mb: int
    free_mb: int | None = None
    device_id: int = 0x1234
    api_version: str = "1.3.260"
    driver_version: int = vulkan_version(23, 2, 1)

    def spec(self) -> str:
        fields = [self.name, hex(self.vendor_id), hex(self.device_id), str(self.device_type)]
        fields += [self.api_version, str(self.driver_version), str(self.memory_mb)]
        return "|".join([*fields, str(-1 if self.free_mb is None else self.free_mb)])


VK_RTX_3060 = FakeVulkanDevice(
    "NVIDIA GeForce RTX 3060",
    0x10DE,
    2,
    12288,
    11264,
    0x2504,
    "1.3.242",
    nvidia_driver_version(535, 104, 5),
)
VK_IRIS_XE = FakeVulkanDevice(
    "Intel(R) Iris(R) Xe Graphics (TGL GT2)", 0x8086, 1, 3072, None, 0x9A49
)


def without_vulkan_loader(root: Path, loader: Path) -> list[str]:
    """A command prefix that runs its command where `loader` (the system's Vulkan loader) does
    not exist: a private mount namespace (root only) whose copy of the loader's directory
    holds links to everything else in it."""
    real = loader.parent
    original, farm = root / "original-libs", root / "libs-without-vulkan"
    original.mkdir(exist_ok=True)
    farm.mkdir(exist_ok=True)
    for entry in real.iterdir():
        if not entry.name.startswith("libvulkan.so") and not (farm / entry.name).is_symlink():
            (farm / entry.name).symlink_to(original / entry.name)
    mount, unshare = shutil.which("mount"), shutil.which("unshare")
    assert mount and unshare, "util-linux's mount and unshare are needed"
    script = f'{mount} --bind "$1" "$2" && {mount} --bind "$3" "$1" && shift 3 && exec "$@"'
    return [unshare, "--mount", "/bin/sh", "-c", script, "sh", str(real), str(original), str(farm)]


def write_fake_smi(bin_dir: Path) -> Path:
    """Write the fake `nvidia-smi` (run by this Python) into `bin_dir`; return its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(_FAKE_SMI.format(python=sys.executable))
    script.chmod(0o755)
    return script


@dataclass
class FakeGpu:
    """One fake GPU; `spec()` is its FAKE_GPUS entry."""

    name: str
    uuid: str
    total_mb: int
    free_mb: int
    compute_capability: str

    def spec(self) -> str:
        return "|".join(
            [self.name, self.uuid, str(self.total_mb), str(self.free_mb), self.compute_capability]
        )


GTX_1060 = FakeGpu(
    "NVIDIA GeForce GTX 1060 6GB", "GPU-1060aaaa-0000-0000-0000-000000000000", 6144, 5760, "6.1"
)
RTX_3060 = FakeGpu(
    "NVIDIA GeForce RTX 3060", "GPU-3060bbbb-0000-0000-0000-000000000000", 12288, 11800, "8.6"
)


@dataclass
class FakeHardware:
    """A fake machine under `root`: which driver parts exist, what they report, where data goes.

    `lib_dir` is always first on LD_LIBRARY_PATH (empty until `install_nvml()`); the fake
    nvidia-smi is on PATH only while `smi_mode` is set.
    """

    root: Path
    nvml_build: Path
    smi_bin: Path
    gpus: list[FakeGpu] = field(default_factory=list)
    driver_version: str = "535.104.05"
    cuda_version: int = 12020
    nvml_fail: str | None = None  # "function:code", e.g. "nvmlInitWithFlags:9"
    smi_mode: str | None = None
    icd_build: Path | None = None
    vulkan_devices: list[FakeVulkanDevice] = field(default_factory=list)
    vulkan_mode: str = "normal"  # what the fake ICD does when asked for devices: hang, crash
    system_vulkan: bool = False  # True: the system's own Vulkan drivers instead of icd_dir's

    @property
    def lib_dir(self) -> Path:
        return self.root / "lib"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def nvml_library(self) -> Path:
        return self.lib_dir / NVML_LIBRARY_NAME

    @property
    def cache_file(self) -> Path:
        return self.home / ".gpu_detection_cache.json"

    @property
    def icd_dir(self) -> Path:
        """The only directory the Vulkan loader reads driver manifests from (VK_DRIVER_FILES)."""
        return self.root / "vulkan" / "icd.d"

    def install_icd(self, name: str = "fake_icd.json") -> Path:
        """Install the fake Vulkan driver: its library in lib_dir, its manifest in icd_dir."""
        assert self.icd_build is not None, "this machine was made without the fake ICD"
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        library = self.lib_dir / ICD_LIBRARY_NAME
        shutil.copyfile(self.icd_build, library)
        manifest = {
            "file_format_version": "1.0.0",
            "ICD": {"library_path": str(library), "api_version": "1.3.260"},
        }
        return self.write_manifest(name, json.dumps(manifest))

    def write_manifest(self, name: str, text: str) -> Path:
        """Put a driver manifest with this text in icd_dir."""
        self.icd_dir.mkdir(parents=True, exist_ok=True)
        path = self.icd_dir / name
        path.write_text(text)
        return path

    def install_nvml(self) -> Path:
        """Put the fake driver library where the loader looks first (a fresh file each time)."""
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.nvml_build, self.nvml_library)
        return self.nvml_library

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process running on this fake machine."""
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in _SCRUBBED_KEYS and not key.startswith(_SCRUBBED_PREFIXES)
        }
        empty_bin = self.root / "empty-bin"
        empty_bin.mkdir(parents=True, exist_ok=True)
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            {
                "PATH": str(self.smi_bin if self.smi_mode is not None else empty_bin),
                "LD_LIBRARY_PATH": str(self.lib_dir),
                "LLAMASHIP_HOME": str(self.home),
                "FAKE_GPUS": ";".join(gpu.spec() for gpu in self.gpus),
                "FAKE_DRIVER_VERSION": self.driver_version,
                "FAKE_CUDA_VERSION": str(self.cuda_version),
                "FAKE_NVML_LOG": str(self.root / "nvml-calls.log"),
                "FAKE_SMI_LOG": str(self.root / "smi-calls.log"),
                "FAKE_SMI_PIDFILE": str(self.root / "smi.pids"),
            }
        )
        env.update(
            {
                "FAKE_VK_DEVICES": ";".join(device.spec() for device in self.vulkan_devices),
                "FAKE_VK_MODE": self.vulkan_mode,
                "FAKE_VK_LOG": str(self.root / "vulkan-calls.log"),
                "FAKE_VK_PIDFILE": str(self.root / "vulkan.pids"),
            }
        )
        if not self.system_vulkan:
            self.icd_dir.mkdir(parents=True, exist_ok=True)
            env["VK_DRIVER_FILES"] = str(self.icd_dir)
        if self.nvml_fail is not None:
            env["FAKE_NVML_FAIL"] = self.nvml_fail
        if self.smi_mode is not None:
            env["FAKE_SMI_MODE"] = self.smi_mode
        env.update(extra)
        return env

    def run_cli(
        self, *args: str, trust: str | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m llamaship ARGS` on this machine (extra: more environment variables).

        `trust`: a release public key to trust besides the bundled ones (through the test
        launcher `tests/trusting_cli.py`: the shipped command has no such option).
        """
        return subprocess.run(
            [*llamaship_command(trust), *args],
            env=self.env(**extra),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def detect(self, *args: str, **extra: str) -> dict[str, Any]:
        """`llamaship detect --json ARGS`: the report it printed (it must exit 0)."""
        result = self.run_cli("detect", "--json", *args, **extra)
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def vulkan_calls(self) -> list[str]:
        log = self.root / "vulkan-calls.log"
        return log.read_text().split() if log.exists() else []

    def nvml_calls(self) -> list[str]:
        log = self.root / "nvml-calls.log"
        return log.read_text().split() if log.exists() else []

    def smi_calls(self) -> list[str]:
        log = self.root / "smi-calls.log"
        return log.read_text().splitlines() if log.exists() else []
