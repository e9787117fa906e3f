"""The build asks a venv's interpreter through its own commands, never through program text."""

from __future__ import annotations

import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

import PyInstaller
import pytest

from llamaship_build.errors import BuildError
from llamaship_build.interpreter import (
    llama_lib_dir,
    parse_sysconfig_paths,
    site_packages,
    versions,
)

PYTHON = Path(sys.executable)


def test_site_packages_is_the_interpreters_purelib() -> None:
    assert site_packages(PYTHON) == Path(sysconfig.get_paths()["purelib"])


def test_versions_are_pyinstallers_and_pythons() -> None:
    assert versions(PYTHON) == (PyInstaller.__version__, platform.python_version())


def test_llama_cpp_is_found_in_the_venv_without_importing_it(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path)], check=True)
    scripts = sysconfig.get_path("scripts", scheme="venv", vars={"base": str(tmp_path)})
    python = Path(scripts) / Path(sys.executable).name
    with pytest.raises(BuildError, match="has no llama_cpp installed"):
        llama_lib_dir(python)
    platlib = Path(sysconfig.get_path("platlib", scheme="venv", vars={"platbase": str(tmp_path)}))
    (platlib / "llama_cpp").mkdir()
    (platlib / "llama_cpp" / "__init__.py").write_text("raise ImportError('never imported')\n")
    assert llama_lib_dir(python).resolve() == (platlib / "llama_cpp" / "lib").resolve()


def test_only_the_paths_section_is_read() -> None:
    text = (
        'Platform: "linux-x86_64"\n\nPaths: \n\tpurelib = "/venv/lib/site-packages"\n'
        '\tscripts = "/venv/bin"\n\nVariables: \n\tpurelib = "/elsewhere"\n'
    )
    assert parse_sysconfig_paths(text) == {
        "purelib": "/venv/lib/site-packages",
        "scripts": "/venv/bin",
    }
