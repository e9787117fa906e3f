"""The import check on real binaries: Windows launchers from pip and setuptools, the locked
PyInstaller's bootloaders for Windows and macOS, and pyzmq's Linux and macOS wheels (a
universal2 Mach-O with a delocated `.dylibs/`). Wheels come from PyPI, hash-checked, cached
under the build cache's test-downloads/; without PyPI these tests fail saying so."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pefile
import pytest
from macholib.MachO import MachO

from llamaship_build.cuda_layer import runtime_needs, stage_cuda_layer
from llamaship_build.elf import Patchelf, find_patchelf
from llamaship_build.errors import BuildError
from llamaship_build.imports_check import (
    FORMATS,
    Trees,
    check_imports,
    find_missing,
    macho_resolves,
)
from llamaship_build.overlay_build import runtime_requirements
from llamaship_build.project import Project, cache_dir
from llamaship_contract.names import ExitStatus

REQUIREMENTS = Project.here().requirements
# Small wheels with native code, pinned to the file (the tag is in the name).
PYZMQ_MACOS = (
    "pyzmq==27.3.0 --hash=sha256:86fb4408797aabb54a31e147176ae0f2474d99f1715a36a4564089eca9ef9ce8"
)
PYZMQ_LINUX = (
    "pyzmq==27.3.0 --hash=sha256:477b8ad30d66fc905c5388351e83b9ac25824b00e82c0d052b72ea6392636dfd"
)
MARKUPSAFE_WINDOWS = (
    "markupsafe==3.0.4 "
    "--hash=sha256:fdb4ca07ab75ffadab4a8b135ad59cdbb3156b99310f3d565370da74a15d6bd3"
)


def _package_file(package: str, relative: str) -> Path:
    """A file shipped inside an installed distribution (found through its metadata: finding
    `pip` through the import system would wake setuptools' distutils shim)."""
    located = Path(str(importlib.metadata.distribution(package).locate_file(package)))
    path = located / relative
    assert path.is_file(), f"{package} is not installed with {relative}"
    return path


def _wheel_tree(requirement: str, platform: str, tmp_path: Path) -> Path:
    """Download `requirement` (hashed) for `platform` from PyPI once; unpack it under tmp."""
    cache = cache_dir() / "test-downloads"
    cache.mkdir(parents=True, exist_ok=True)
    pinned = tmp_path / "requirement.txt"
    pinned.write_text(requirement + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--platform",
            platform,
            "--python-version",
            "3.11",
            "-r",
            str(pinned),
            "-d",
            str(cache),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"this test needs PyPI to download {requirement.split()[0]} for {platform} "
            f"(exit {result.returncode}): {result.stderr.strip()[-1500:]}",
            pytrace=False,
        )
    name, version = requirement.split()[0].split("==")
    (wheel,) = sorted(cache.glob(f"{name}-{version}-*{platform.split('_')[0]}*.whl"))
    tree = tmp_path / wheel.stem
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tree)
    for path in tree.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return tree


def _tree_with(tmp_path: Path, *files: Path) -> Path:
    tree = tmp_path / "bundle"
    tree.mkdir()
    for file in files:
        shutil.copyfile(file, tree / file.name)
    return tree


def test_a_windows_program_that_imports_only_windows_passes(tmp_path: Path) -> None:
    launcher = _package_file("pip", "_vendor/distlib/t64.exe")
    assert FORMATS["windows"].imports(launcher) == ("KERNEL32.dll", "SHLWAPI.dll")
    assert check_imports(_tree_with(tmp_path, launcher), "windows") == 1


def test_the_msvc_runtime_must_be_shipped_then_any_case_counts(tmp_path: Path) -> None:
    launcher = _package_file("setuptools", "cli-64.exe")  # MSVC-linked, dynamic CRT
    tree = _tree_with(tmp_path, launcher)
    with pytest.raises(BuildError, match=r"cli-64\.exe needs VCRUNTIME140\.dll\. Ship"):
        check_imports(tree, "windows")
    (tree / "vcruntime140.dll").write_bytes(b"")  # the loader ignores case
    assert check_imports(tree, "windows") == 1


def test_an_openmp_runtime_is_not_presumed(tmp_path: Path) -> None:
    tree = _tree_with(tmp_path, _package_file("setuptools", "cli-64.exe"))
    image = pefile.PE(str(tree / "cli-64.exe"))
    (runtime,) = (e for e in image.DIRECTORY_ENTRY_IMPORT if e.dll == b"VCRUNTIME140.dll")
    image.set_bytes_at_rva(
        runtime.struct.Name, b"VCOMP140.DLL\0\0\0\0"
    )  # what MSVC's /openmp links
    patched = image.write()
    image.close()
    (tree / "cli-64.exe").write_bytes(bytes(patched))
    assert find_missing(tree, "windows").missing == {"cli-64.exe": ("VCOMP140.DLL",)}


def test_every_problem_of_every_binary_comes_in_one_error(tmp_path: Path) -> None:
    extension = _wheel_tree(MARKUPSAFE_WINDOWS, "win_amd64", tmp_path)
    shutil.copyfile(_package_file("setuptools", "cli-64.exe"), extension / "cli-64.exe")
    with pytest.raises(BuildError) as raised:
        check_imports(extension, "windows")
    message = str(raised.value)
    assert "cli-64.exe needs VCRUNTIME140.dll" in message
    assert "markupsafe/_speedups.cp311-win_amd64.pyd needs python311.dll, VCRUNTIME140.dll" in (
        message
    )
    assert "api-ms-win-crt" not in message  # the Universal CRT is part of Windows 10 and later


@pytest.mark.parametrize(
    ("lock", "platform", "os_name"),
    [("windows-amd64", "win_amd64", "windows"), ("macos-arm64", "macosx_14_0_arm64", "macos")],
)
def test_the_locked_pyinstaller_bootloaders_need_only_the_os(
    tmp_path: Path, lock: str, platform: str, os_name: str
) -> None:
    pin = runtime_requirements(REQUIREMENTS / lock / "build.txt", ("pyinstaller",))
    tree = _wheel_tree(pin, platform, tmp_path)
    bootloaders = next(tree.glob("PyInstaller/bootloader/*-64bit*"))
    assert check_imports(bootloaders, os_name) == 4  # run, run_d, runw, runw_d
    windowed = FORMATS[os_name].imports(next(bootloaders.glob("runw*")))
    assert len(windowed) >= 3  # system libraries beyond the C runtime pass too


def test_a_macos_wheel_resolves_its_loader_path_libraries(tmp_path: Path) -> None:
    tree = _wheel_tree(PYZMQ_MACOS, "macosx_11_0_arm64", tmp_path)
    assert check_imports(tree, "macos") == 3
    libzmq = tree / "zmq" / ".dylibs" / "libzmq.5.dylib"
    assert FORMATS["macos"].imports(libzmq) == (
        "@loader_path/libsodium.26.dylib",
        "/usr/lib/libSystem.B.dylib",
        "/usr/lib/libc++.1.dylib",
    )
    (tree / "zmq" / ".dylibs" / "libsodium.26.dylib").unlink()
    assert find_missing(tree, "macos").missing == {
        "zmq/.dylibs/libzmq.5.dylib": ("@loader_path/libsodium.26.dylib",)
    }


def test_an_rpath_library_needs_an_rpath_inside_the_bundle(tmp_path: Path) -> None:
    tree = _wheel_tree(PYZMQ_MACOS, "macosx_11_0_arm64", tmp_path)
    libzmq = tree / "zmq" / ".dylibs" / "libzmq.5.dylib"
    image = MachO(str(libzmq))  # rewritten as PyInstaller rewrites install names
    image.rewriteLoadCommands(
        lambda name: "@rpath/libsodium.26.dylib" if "libsodium" in name else None
    )
    with libzmq.open("rb+") as handle:
        for header in image.headers:  # both architectures
            handle.seek(0)
            header.write(handle)
    assert find_missing(tree, "macos").missing == {
        "zmq/.dylibs/libzmq.5.dylib": ("@rpath/libsodium.26.dylib",)
    }
    trees = Trees(tree)
    name = "@rpath/libsodium.26.dylib"
    assert macho_resolves(name, libzmq, ["@loader_path"], trees)
    assert macho_resolves(
        name, libzmq, ["/opt/homebrew/lib", "@executable_path/zmq/.dylibs"], trees
    )
    assert not macho_resolves(name, libzmq, ["/opt/homebrew/lib"], trees)
    assert not macho_resolves(name, libzmq, ["@loader_path/../../.."], trees)  # outside
    assert macho_resolves("/System/Library/Frameworks/Metal.framework/Metal", libzmq, [], trees)
    assert not macho_resolves("/opt/homebrew/opt/libomp/lib/libomp.dylib", libzmq, [], trees)


def test_an_elf_library_missing_from_the_tree_is_named(tmp_path: Path) -> None:
    tree = _wheel_tree(PYZMQ_LINUX, "manylinux_2_28_x86_64", tmp_path)
    assert check_imports(tree, "linux") == 3  # glibc and libstdc++ are the system's
    (sodium,) = (tree / "pyzmq.libs").glob("libsodium-*.so*")
    sodium.unlink()
    (lacking,) = find_missing(tree, "linux").missing.values()
    assert lacking == (sodium.name,)


def test_the_llama_cuda_layer_loads_only_beside_its_runtime_layer_and_the_bundle(
    tmp_path: Path, cuda_module: Path
) -> None:
    patchelf = Patchelf(find_patchelf())
    layer = tmp_path / "llama-cuda"
    _, info = stage_cuda_layer(cuda_module, layer, patchelf)
    cuda = runtime_needs(info)
    assert "libcudart.so.13" in cuda
    with pytest.raises(BuildError) as raised:
        check_imports(layer, "linux")
    assert all(name in str(raised.value) for name in (*cuda, "libggml-base.so.0"))
    runtime, bundle = tmp_path / "cuda-runtime", tmp_path / "bundle"
    (runtime / "lib").mkdir(parents=True)
    for name in cuda:
        (runtime / "lib" / name).write_bytes(b"")
    with pytest.raises(BuildError, match=r"libggml-base\.so\.0"):
        check_imports(layer, "linux", alongside=(runtime,))
    (bundle / "llama_cpp" / "lib").mkdir(parents=True)
    (bundle / "llama_cpp" / "lib" / "libggml-base.so.0").write_bytes(b"")
    assert check_imports(layer, "linux", alongside=(runtime, bundle)) == 1  # the module


def test_a_tree_without_the_platforms_binaries_is_refused(tmp_path: Path) -> None:
    tree = _tree_with(tmp_path, _package_file("pip", "_vendor/distlib/t64.exe"))
    with pytest.raises(BuildError, match="holds no Mach-O binary: it is not a macos bundle"):
        check_imports(tree, "macos")


def test_the_command_fails_with_one_line_and_the_build_status(tmp_path: Path) -> None:
    tree = _tree_with(tmp_path, _package_file("setuptools", "cli-64.exe"))
    command = [sys.executable, "-m", "llamaship_build", "check-imports", "--platform", "windows"]
    failed = subprocess.run([*command, str(tree)], capture_output=True, text=True, check=False)
    assert failed.returncode == ExitStatus.BUILD_FAILED
    assert failed.stderr.startswith("error: ") and failed.stderr.count("\n") == 1
    assert "cli-64.exe needs VCRUNTIME140.dll" in failed.stderr
    (tree / "VCRUNTIME140.dll").write_bytes(b"")
    passed = subprocess.run([*command, str(tree)], capture_output=True, text=True, check=False)
    assert passed.returncode == 0, passed.stderr
    assert "the 1 windows binaries" in passed.stdout
