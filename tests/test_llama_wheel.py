"""The llama-cpp-python compile's inputs: fixed source and build places, mapped paths."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from llamaship_build import llama_wheel
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import (
    BUILD_PREFIX,
    PORTABLE,
    Pin,
    prefix_map_env,
    unpack_sdist,
    wheel_key,
)
from llamaship_build.toolchain import HOST, DebianRoot


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
    env = prefix_map_env(scratch, root)
    flag = f"-ffile-prefix-map=/tmp/llamaship-x1y2={BUILD_PREFIX}"
    assert env == {"CFLAGS": flag, "CXXFLAGS": flag, "CUDAFLAGS": f"-Xcompiler={flag}"}
    assert prefix_map_env(scratch, HOST, "linux")["CFLAGS"] == (
        f"-ffile-prefix-map={scratch.resolve()}={BUILD_PREFIX}"
    )
    assert prefix_map_env(scratch, HOST, "darwin")["CXXFLAGS"].startswith("-ffile-prefix-map=")
    assert prefix_map_env(scratch, HOST, "win32") == {}  # MSVC has no such flag


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
