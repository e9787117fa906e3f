"""The CUDA architectures a library really holds code for, read from its ELF `.nv_fatbin`.

The overlay's signed `cuda_archs` (SASS) and `ptx_archs` (PTX, JIT-compiled by the driver for
newer GPUs) come from here, never from a command-line default: what was compiled is what the
runtime's compatibility rule trusts.

Layout (nvcc's fat binary container, as CUDA's `fatbinary_section.h` and cuobjdump read it):
the section holds containers `{u32 magic 0xBA55ED50, u16 version, u16 header_size,
u64 payload_size}`, each followed by entries `{u16 kind (1 PTX, 2 ELF/SASS), u16 version,
u32 header_size, u64 payload_size, ..., u32 arch at offset 28}`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.elf import read_section
from llamaship_build.errors import BuildError

_FATBIN_MAGIC = 0xBA55ED50
_CONTAINER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQ")
_ENTRY_ARCH_OFFSET = 28
_ENTRY_MIN_SIZE = 32
_KIND_PTX = 1
_KIND_SASS = 2


@dataclass(frozen=True)
class CudaArchs:
    """SASS and PTX architectures as the manifest writes them ("75", "120")."""

    sass: tuple[str, ...]
    ptx: tuple[str, ...]


def _entries(section: bytes) -> Iterator[tuple[int, int]]:
    """(kind, arch) of every entry of every fat binary container in `section`."""
    position = 0
    while position + _CONTAINER.size <= len(section):
        magic, _version, header_size, payload = _CONTAINER.unpack_from(section, position)
        if magic != _FATBIN_MAGIC:
            position += 8  # containers are 8-byte aligned; skip padding
            continue
        entry, end = position + header_size, position + header_size + payload
        while entry + _ENTRY_MIN_SIZE <= end:
            kind, _entry_version, entry_header, entry_payload = _ENTRY.unpack_from(section, entry)
            if entry_header == 0:
                break
            (arch,) = struct.unpack_from("<I", section, entry + _ENTRY_ARCH_OFFSET)
            yield kind, arch
            entry += entry_header + entry_payload
        position = end


def library_archs(path: Path) -> CudaArchs | None:
    """The architectures in one library's fat binary; None if it holds no CUDA code."""
    section = read_section(path.read_bytes(), ".nv_fatbin")
    if section is None:
        return None
    by_kind: dict[int, set[int]] = {_KIND_SASS: set(), _KIND_PTX: set()}
    for kind, arch in _entries(section):
        by_kind.setdefault(kind, set()).add(arch)
    sass, ptx = sorted(by_kind[_KIND_SASS]), sorted(by_kind[_KIND_PTX])
    if not sass and not ptx:
        return None
    return CudaArchs(tuple(map(str, sass)), tuple(map(str, ptx)))


def compiled_archs(libraries: Iterable[Path]) -> CudaArchs:
    """The architectures every CUDA library among `libraries` holds code for.

    An architecture counts only if each library with device code has it (a GPU needs them all).
    """
    found = [archs for path in libraries if (archs := library_archs(path)) is not None]
    if not found:
        msg = (
            "no CUDA device code (.nv_fatbin) found in the overlay's libraries: is this a "
            "CUDA build of llama-cpp-python (GGML_CUDA=ON)?"
        )
        raise BuildError(msg)
    sass = set.intersection(*(set(archs.sass) for archs in found))
    ptx = set.intersection(*(set(archs.ptx) for archs in found))
    if not sass and not ptx:
        msg = "the overlay's CUDA libraries share no GPU architecture; rebuild them together"
        raise BuildError(msg)
    return CudaArchs(tuple(sorted(sass, key=int)), tuple(sorted(ptx, key=int)))
