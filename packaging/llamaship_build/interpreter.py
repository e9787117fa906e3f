"""What the build asks of a build venv's interpreter, through that interpreter's own commands
(`python -m sysconfig`, `python --version`, `python -m PyInstaller --version`).

The interpreter is the toolchain's (on Linux, inside the Debian root), so every answer comes
from running it; paths come back as host paths.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.toolchain import HOST, Toolchain


def parse_sysconfig_paths(text: str) -> dict[str, str]:
    """The `Paths:` section of `python -m sysconfig`'s output, as a dict."""
    paths: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            section = line.split(":", 1)[0]
        elif section == "Paths" and "=" in line:
            key, value = line.strip().split(" = ", 1)
            paths[key] = value.strip('"')
    return paths


def install_paths(python: Path, toolchain: Toolchain = HOST) -> dict[str, Path]:
    """The install scheme's paths of `python` (purelib, platlib, ...), as host paths."""
    text = toolchain.output([toolchain.inside(python), "-m", "sysconfig"])
    paths = parse_sysconfig_paths(text)
    if "purelib" not in paths or "platlib" not in paths:
        msg = f"`{python} -m sysconfig` printed no purelib/platlib paths: {text[:300]!r}"
        raise BuildError(msg)
    return {key: toolchain.outside(value) for key, value in paths.items()}


def site_packages(python: Path, toolchain: Toolchain = HOST) -> Path:
    """The purelib directory of the venv of `python` (what the bundle's packages come from)."""
    return install_paths(python, toolchain)["purelib"]


def llama_lib_dir(python: Path, toolchain: Toolchain = HOST) -> Path:
    """`llama_cpp/lib` of the llama_cpp installed for the interpreter `python` (a host path;
    the interpreter is `toolchain`'s), found without importing it."""
    paths = install_paths(python, toolchain)
    for key in ("platlib", "purelib"):
        package = paths[key] / "llama_cpp"
        if (package / "__init__.py").is_file():
            return package / "lib"
    msg = f"{python} has no llama_cpp installed (not in {paths['platlib']}): rebuild its venv"
    raise BuildError(msg)


def versions(python: Path, toolchain: Toolchain = HOST) -> tuple[str, str]:
    """PyInstaller's version and Python's (`3.11.2`) in the venv of `python`."""
    inside = toolchain.inside(python)
    try:
        pyinstaller = toolchain.output([inside, "-m", "PyInstaller", "--version"])
    except subprocess.CalledProcessError as error:
        msg = f"{python} has no PyInstaller: {str(error.stderr).strip()[-300:]}"
        raise BuildError(msg) from None
    python_version = toolchain.output([inside, "--version"]).split()[-1]
    return pyinstaller.strip(), python_version
