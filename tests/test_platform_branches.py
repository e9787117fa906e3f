"""Windows and macOS code paths, run here with injected platform data (no global patching)."""

from __future__ import annotations

import ctypes
import json
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llamaship.launch import activate as activation
from llamaship.launch.activate import ActivationError, Loader, activate, deactivate
from llamaship.launch.launch_env import RECORD
from llamaship.native import BackendLoadError, _ggml_library
from llamaship.overlay.store import OverlayStore
from llamaship.paths import DataDirs
from llamaship_backend.restart import exec_restart
from llamaship_build.llama_wheel import normalize_wheel
from llamaship_build.platforms import PLATFORMS
from llamaship_build.project import Project
from llamaship_build.spec import build_context, render_spec
from llamaship_contract.trust import TrustedKeys
from overlay_kit.probe import install_release
from overlay_kit.releases import Keys, ReleaseFactory, ReleaseSpec


class RecordingLoader:
    """What activation asked the OS loader to do."""

    def __init__(self) -> None:
        self.dll_directories: list[str] = []
        self.loaded: list[tuple[str, int]] = []

    def add_dll_directory(self, path: str) -> object:
        self.dll_directories.append(path)
        return object()

    def load(self, path: str, mode: int) -> object:
        self.loaded.append((Path(path).name, mode))
        return object()

    def loader(self, system: str) -> Loader:
        return Loader(system=system, add_dll_directory=self.add_dll_directory, load=self.load)


def _overlay(root: Path, runtime_names: list[str], module_name: str) -> tuple[Path, Path]:
    """(module, runtime folder) laid out as the two CUDA layers hold them."""
    module, runtime = root / "llama" / "backends" / module_name, root / "runtime" / "lib"
    module.parent.mkdir(parents=True)
    module.write_bytes(b"")
    runtime.mkdir(parents=True)
    for name in runtime_names:
        (runtime / name).write_bytes(b"")
    return module, runtime


@pytest.fixture
def clean_dll_directories() -> Iterator[None]:
    yield None
    activation._dll_directories.clear()


@pytest.mark.usefixtures("clean_dll_directories")
def test_windows_activation_loads_the_runtime_by_path_and_puts_its_folder_first_on_path(
    tmp_path: Path,
) -> None:
    module, runtime = _overlay(
        tmp_path, ["cublas64_13.dll", "cublasLt64_13.dll", "cudart64_13.dll"], "ggml-cuda.dll"
    )
    recorder = RecordingLoader()
    environ = {"PATH": r"C:\Windows\system32;C:\app"}
    activate(module, runtime, recorder.loader("win32"), environ)
    assert recorder.dll_directories == [str(runtime)]
    # by full path, dependencies first, so ggml's LoadLibrary finds them already loaded
    assert recorder.loaded == [
        ("cudart64_13.dll", 0),
        ("cublasLt64_13.dll", 0),
        ("cublas64_13.dll", 0),
    ]
    # what the launch changed, for a restart to start from the environment before it
    assert json.loads(environ.pop(RECORD)) == {
        "GGML_BACKEND_PATH": None,
        "PATH": r"C:\Windows\system32;C:\app",
    }
    # the children of the launch (fit tool, probe, measurement) find them through PATH
    assert environ == {
        "GGML_BACKEND_PATH": str(module),
        "PATH": f"{runtime};C:\\Windows\\system32;C:\\app",
    }
    deactivate(module, runtime, recorder.loader("win32"), environ)
    assert environ == {"PATH": r"C:\Windows\system32;C:\app"}
    assert str(runtime) not in activation._dll_directories


def test_linux_activation_preloads_the_cuda_runtime_in_order_and_names_the_module(
    tmp_path: Path,
) -> None:
    module, runtime = _overlay(
        tmp_path, ["libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13"], "libggml-cuda.so"
    )
    recorder = RecordingLoader()
    environ: dict[str, str] = {"LD_LIBRARY_PATH": "/app/_internal", "HOME": "/home/u"}
    activate(module, runtime, recorder.loader("linux"), environ)
    assert recorder.loaded == [
        ("libcudart.so.13", ctypes.RTLD_GLOBAL),
        ("libcublasLt.so.13", ctypes.RTLD_GLOBAL),
        ("libcublas.so.13", ctypes.RTLD_GLOBAL),
    ]
    assert recorder.dll_directories == []
    before = {"GGML_BACKEND_PATH": None, "LD_LIBRARY_PATH": "/app/_internal"}
    assert json.loads(environ.pop(RECORD)) == before
    assert environ == {
        "GGML_BACKEND_PATH": str(module),
        "LD_LIBRARY_PATH": f"{runtime}:/app/_internal",
        "HOME": "/home/u",
    }
    activate(module, runtime, recorder.loader("linux"), environ)  # once on the path
    assert environ["LD_LIBRARY_PATH"] == f"{runtime}:/app/_internal"
    environ.pop(RECORD)
    deactivate(module, runtime, recorder.loader("linux"), environ)
    assert environ == {"LD_LIBRARY_PATH": "/app/_internal", "HOME": "/home/u"}
    with pytest.raises(ActivationError, match=r"backend module .* is missing: reinstall"):
        activate(tmp_path / "gone.so", runtime, recorder.loader("linux"), {})


@pytest.mark.parametrize(
    ("system", "names", "expected"),
    [
        ("linux", ["libggml.so", "libggml.so.0"], "libggml.so.0"),
        ("darwin", ["libggml.dylib", "libggml.0.dylib"], "libggml.0.dylib"),
        ("win32", ["ggml.dll", "ggml-base.dll"], "ggml.dll"),
    ],
)
def test_the_ggml_registry_library_is_found_by_each_os_name(
    tmp_path: Path, system: str, names: list[str], expected: str
) -> None:
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert _ggml_library(tmp_path, system).name == expected
    with pytest.raises(BackendLoadError, match="no ggml library"):
        _ggml_library(tmp_path, "win32" if system != "win32" else "darwin")


def test_restart_spawns_a_new_process_on_windows_and_execs_elsewhere() -> None:
    calls: list[tuple[str, list[str]]] = []

    def spawn(command: list[str], environment: dict[str, str]) -> object:
        calls.append(("spawn", command))
        return None

    def execute(command: list[str], environment: dict[str, str]) -> object:
        calls.append(("exec", command))
        return None

    assert exec_restart("win32", spawn=spawn, execute=execute) == 0
    assert exec_restart("linux", spawn=spawn, execute=execute) == 0
    assert exec_restart("darwin", spawn=spawn, execute=execute) == 0
    assert [kind for kind, _ in calls] == ["spawn", "exec", "exec"]
    assert all(command[0] == sys.executable for _, command in calls)


def _in_use_on_windows(in_use: list[Path]) -> Callable[[Path, Path], None]:
    """A rename that, like Windows, refuses to move a directory holding a loaded DLL."""

    def rename(source: Path, target: Path) -> None:
        if any(path == source or path.is_relative_to(source) for path in in_use):
            raise PermissionError(
                13,
                "The process cannot access the file because it is being used by another process",
                str(source),
            )
        source.rename(target)

    return rename


def test_switching_works_while_old_layers_are_in_use_and_they_go_later(
    tmp_path: Path, v1_active: DataDirs, releases: ReleaseFactory, release_keys: Keys
) -> None:
    v1 = OverlayStore(v1_active).active()
    assert v1 is not None
    index = releases.publish(
        tmp_path / "v2-release", ReleaseSpec(overlay_version="0.3.36-cu13.0-2", serial=2)
    )
    install_release(v1_active, str(index), release_keys)  # v2 active, v1 previous
    in_use = v1.module.parents[1]  # the llama-cuda layer, whose ggml-cuda.dll is loaded
    running = OverlayStore(v1_active, rename=_in_use_on_windows([in_use]))
    running.remove()  # v2 becomes previous: v1 is unreferenced, but its DLLs are loaded
    assert running.active() is None
    assert in_use.is_dir(), "a layer in use is kept, whole"
    later = OverlayStore(v1_active)  # the next launch, after that process ended
    later.cleanup_leftovers()
    assert not in_use.exists()
    assert later.previous() is not None


@pytest.mark.parametrize(
    ("system", "libraries"),
    [
        ("win32", ["llama.dll", "ggml.dll", "ggml-base.dll", "ggml-cpu-*.dll"]),
        ("darwin", ["libllama.dylib", "libggml.0.dylib", "libggml-base.0.dylib", "libggml-*.so"]),
    ],
)
def test_spec_names_each_os_llama_libraries(system: str, libraries: list[str]) -> None:
    project = Project.here()
    context = build_context(project, PLATFORMS[system], TrustedKeys(release=("key",)))
    text = render_spec(project.templates, context)
    assert context["llama_libraries"] == libraries
    assert f"LLAMA_LIBRARIES = {libraries!r}".replace("'", '"') in text


@pytest.mark.parametrize(
    ("raw_names", "expected"),
    [
        (
            [
                "bin/ggml-cpu-haswell.dll",
                "bin/llama.dll",
                "lib/llama.lib",
                "bin/llama-cli.exe",
                "llama_cpp/lib/llama.dll",
                "llama_cpp/lib/ggml.dll",
            ],
            [
                "llama_cpp/lib/ggml-cpu-haswell.dll",
                "llama_cpp/lib/ggml.dll",
                "llama_cpp/lib/llama.dll",
            ],
        ),
        (
            [
                "bin/libggml-cpu-apple_m1.so",
                "lib/libllama.dylib",
                "llama_cpp/lib/libllama.dylib",
                "llama_cpp/lib/libggml.0.dylib",
                "bin/libggml-metal.0.dylib",
            ],
            [
                "llama_cpp/lib/libggml-cpu-apple_m1.so",
                "llama_cpp/lib/libggml-metal.0.dylib",
                "llama_cpp/lib/libggml.0.dylib",
                "llama_cpp/lib/libllama.dylib",
            ],
        ),
    ],
)
def test_wheel_normaliser_moves_dll_and_dylib_backends_into_the_package(
    tmp_path: Path, raw_names: list[str], expected: list[str]
) -> None:
    raw = tmp_path / "llama_cpp_python-0.3.36-cp311-cp311-any.whl"
    with zipfile.ZipFile(raw, "w") as wheel:
        for name in raw_names:
            wheel.writestr(name, name.rsplit("/", 1)[-1].encode())
        wheel.writestr("llama_cpp/__init__.py", b"")
        wheel.writestr("llama_cpp_python-0.3.36.dist-info/RECORD", b"")
    (tmp_path / "out").mkdir()
    with zipfile.ZipFile(normalize_wheel(raw, tmp_path / "out")) as wheel:
        libraries = sorted(name for name in wheel.namelist() if name.startswith("llama_cpp/lib/"))
        assert not [name for name in wheel.namelist() if name.startswith(("bin/", "lib/"))]
    assert libraries == expected
