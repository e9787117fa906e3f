"""Strip debug symbols from the bundle's ELF files, except auditwheel-vendored libraries.

PyInstaller's own `strip=True` also strips the libraries auditwheel vendored into `*.libs/`
folders (numpy's OpenBLAS): those were rewritten by patchelf, and a stripped copy fails to
load ("ELF load command address/offset not page-aligned"). So they are left as they are.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

_log = logging.getLogger(__name__)
_ELF_MAGIC = b"\x7fELF"


def _strippable(path: Path, root: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    if any(part.endswith(".libs") for part in path.relative_to(root).parts[:-1]):
        return False
    with open(path, "rb") as file:
        return file.read(4) == _ELF_MAGIC


def strip_binaries(root: Path) -> int:
    """`strip --strip-unneeded` every eligible ELF file under `root`; returns bytes saved."""
    tool = shutil.which("strip")
    if tool is None:
        _log.warning("`strip` (binutils) not found: the bundle keeps its debug symbols")
        return 0
    saved = 0
    for path in sorted(root.rglob("*")):
        if _strippable(path, root):
            before = path.stat().st_size
            subprocess.run([tool, "--strip-unneeded", str(path)], check=True)
            saved += before - path.stat().st_size
    return saved
