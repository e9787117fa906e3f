"""The llama-cpp-python compile's inputs: fixed source and build places, mapped paths."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from llamaship_build import llama_wheel
from llamaship_build.debian_root import DebianRoot
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import (
    BUILD_PREFIX,
    PORTABLE,
    Pin,
    normalize_wheel,
    prefix_map_env,
    unpack_sdist,
    wheel_key,
)
from llamaship_build.toolchain import HOST


def _sdist(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_the_scratch_directory_is_mapped_to_one_name_as_the_toolchain_sees_it(
    tmp_path: Path,
) -> None:
    root = DebianRoot(tmp_path / "root")
    scratch = tmp_path / "root" / "tmp" / "llamaship-x1y2"
    # In the root: only the root's path, and none of this process's flags.
    env = prefix_map_env(scratch, root, "linux", {"CFLAGS": "-O0"})
    flag = f"-ffile-prefix-map=/tmp/llamaship-x1y2={BUILD_PREFIX}"
    assert env == {"CFLAGS": flag, "CXXFLAGS": flag, "CUDAFLAGS": f"-Xcompiler={flag}"}
    # On the host: after the caller's own flags, the given and the resolved path.
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    host = prefix_map_env(tmp_path / "link", HOST, "darwin", {"CXXFLAGS": "-g", "CFLAGS": " "})
    given = f"-ffile-prefix-map={tmp_path / 'link'}={BUILD_PREFIX}"
    resolved = f"-ffile-prefix-map={tmp_path / 'real'}={BUILD_PREFIX}"
    assert host["CFLAGS"] == f"{given} {resolved}"
    assert host["CXXFLAGS"] == f"-g {given} {resolved}"
    assert host["CUDAFLAGS"] == f"-Xcompiler={given} -Xcompiler={resolved}"
    assert prefix_map_env(tmp_path / "real", HOST, "linux", {})["CFLAGS"] == resolved
    assert prefix_map_env(scratch, HOST, "win32", {}) == {}  # MSVC has no such flag


def test_the_sdist_unpacks_to_its_one_tree_and_anything_else_is_refused(tmp_path: Path) -> None:
    good = _sdist(
        tmp_path / "good.tar.gz",
        {
            "llama_cpp_python-0.3.36/pyproject.toml": b"[project]\n",
            "llama_cpp_python-0.3.36/a.c": b"",
        },
    )
    tree = unpack_sdist(good, tmp_path / "src")
    assert tree == tmp_path / "src" / "llama_cpp_python-0.3.36"
    assert (tree / "a.c").is_file()
    flat = _sdist(tmp_path / "flat.tar.gz", {"setup.py": b""})
    with pytest.raises(BuildError, match="one source tree"):
        unpack_sdist(flat, tmp_path / "flat")
    escaping = _sdist(tmp_path / "evil.tar.gz", {"../outside/pyproject.toml": b""})
    with pytest.raises(tarfile.OutsideDestinationError):
        unpack_sdist(escaping, tmp_path / "evil")
    assert not (tmp_path / "outside").exists()


def test_wheels_built_by_an_older_recipe_are_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    pin = Pin("0.3.36", ("0" * 64,))
    current = wheel_key(pin, PORTABLE)
    assert wheel_key(pin, PORTABLE) == current
    monkeypatch.setattr(llama_wheel, "RECIPE", llama_wheel.RECIPE - 1)
    assert wheel_key(pin, PORTABLE) != current


def _raw_wheel(path: Path, stamp: tuple[int, int, int, int, int, int], mode: int) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in (
            ("bin/libggml-cpu-haswell.so", b"variant"),
            ("llama_cpp/lib/libllama.so", b"llama"),
            ("llama_cpp/__init__.py", b""),
            ("llama_cpp_python-0.3.36.dist-info/METADATA", b"Name: llama_cpp_python\n"),
        ):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = mode << 16
            wheel.writestr(info, data)
    return path


def test_normalized_wheels_depend_only_on_their_contents(tmp_path: Path) -> None:
    """The backend stamps members with their build times and the umask's modes."""
    early = _raw_wheel(tmp_path / "early.whl", (2026, 12, 2, 0, 32, 44), 0o100775)
    late = _raw_wheel(tmp_path / "late.whl", (2026, 12, 2, 1, 5, 9), 0o100755)
    outputs = []
    for raw in (early, late):
        (tmp_path / raw.stem).mkdir()
        outputs.append(normalize_wheel(raw, tmp_path / raw.stem).read_bytes())
    assert outputs[0] == outputs[1]
    with zipfile.ZipFile(tmp_path / "early" / "early.whl") as wheel:
        infos = {info.filename: info for info in wheel.infolist()}
    assert {info.date_time for info in infos.values()} == {(1980, 1, 1, 0, 0, 0)}
    assert infos["llama_cpp/lib/libggml-cpu-haswell.so"].external_attr >> 16 == 0o100755
    assert infos["llama_cpp_python-0.3.36.dist-info/RECORD"].external_attr >> 16 == 0o100644
