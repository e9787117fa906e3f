"""The signed CUDA architectures come from the device code a library really holds."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from llamaship_build.errors import BuildError
from llamaship_build.fatbin import CudaArchs, compiled_archs, library_archs

PTX, SASS = 1, 2


def _entry(kind: int, arch: int, payload: bytes = b"\0" * 24) -> bytes:
    """A 64-byte entry header (kind, version, header size, payload size; arch at offset 28)."""
    header = struct.pack("<HHIQ", kind, 0x101, 64, len(payload)) + bytes(12)
    return header + struct.pack("<I", arch) + bytes(32) + payload


def _fatbin(*entries: tuple[int, int]) -> bytes:
    body = b"".join(_entry(kind, arch) for kind, arch in entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def _library(tmp_path: Path, name: str, fatbin: bytes | None) -> Path:
    """A real shared library, with `fatbin` as its .nv_fatbin section when given."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler (cc) is needed: apt-get install gcc")
    source = tmp_path / f"{name}.c"
    source.write_text("int answer(void) { return 42; }\n")
    library = tmp_path / f"{name}.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    if fatbin is not None:
        blob = tmp_path / f"{name}.fatbin"
        blob.write_bytes(fatbin)
        subprocess.run(["objcopy", "--add-section", f".nv_fatbin={blob}", str(library)], check=True)
    return library


def test_reads_sass_and_ptx_architectures(tmp_path: Path) -> None:
    library = _library(tmp_path, "cuda", _fatbin((SASS, 61), (SASS, 70), (PTX, 70), (SASS, 61)))
    assert library_archs(library) == CudaArchs(sass=("61", "70"), ptx=("70",))


def test_several_containers_and_padding_are_read(tmp_path: Path) -> None:
    blob = _fatbin((SASS, 75)) + b"\0" * 8 + _fatbin((SASS, 120), (PTX, 120))
    assert library_archs(_library(tmp_path, "two", blob)) == CudaArchs(("75", "120"), ("120",))


def test_a_library_without_device_code_has_none(tmp_path: Path) -> None:
    assert library_archs(_library(tmp_path, "plain", None)) is None
    text = tmp_path / "notes.txt"
    text.write_text("not an ELF file")
    assert library_archs(text) is None


def test_only_architectures_every_cuda_library_holds_count(tmp_path: Path) -> None:
    first = _library(tmp_path, "a", _fatbin((SASS, 75), (SASS, 86), (PTX, 86)))
    second = _library(tmp_path, "b", _fatbin((SASS, 86), (PTX, 86)))
    plain = _library(tmp_path, "c", None)
    assert compiled_archs([first, second, plain]) == CudaArchs(("86",), ("86",))


def test_no_device_code_at_all_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="GGML_CUDA=ON"):
        compiled_archs([_library(tmp_path, "plain", None)])


def test_libraries_with_no_common_architecture_are_refused(tmp_path: Path) -> None:
    first = _library(tmp_path, "a", _fatbin((SASS, 75)))
    second = _library(tmp_path, "b", _fatbin((SASS, 86)))
    with pytest.raises(BuildError, match="share no GPU architecture"):
        compiled_archs([first, second])
