"""Write small but valid PE32+ images (a DLL or a program) with chosen imports and exports.

One `.rdata` section holds the export directory, the import descriptors with their lookup and
address tables, and a few `ret` bytes the exports point at. pefile (and Windows' loader
format) reads them like a linker's output: enough to test staging without a Windows machine.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

_SECTION_RVA = 0x1000
_FILE_ALIGNMENT = 0x200
_SECTION_ALIGNMENT = 0x1000
_AMD64 = 0x8664
_DLL = 0x2000
_EXECUTABLE_IMAGE = 0x0002
_LARGE_ADDRESS_AWARE = 0x0020
_READ_ONLY_DATA = 0x40000040


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


class _Section:
    def __init__(self) -> None:
        self.data = bytearray()

    def put(self, blob: bytes, alignment: int = 8) -> int:
        """Append `blob` (aligned); return its RVA."""
        self.data.extend(b"\0" * (_align(len(self.data), alignment) - len(self.data)))
        rva = _SECTION_RVA + len(self.data)
        self.data.extend(blob)
        return rva


def _exports(section: _Section, name: str, exports: Sequence[str]) -> tuple[int, int]:
    code = section.put(b"\xc3" * 16)
    name_rva = section.put(name.encode() + b"\0")
    names = sorted(exports)  # the loader binary-searches the name table
    name_rvas = [section.put(export.encode() + b"\0", 1) for export in names]
    functions = section.put(b"".join(struct.pack("<I", code) for _ in names), 4)
    name_table = section.put(b"".join(struct.pack("<I", rva) for rva in name_rvas), 4)
    ordinals = section.put(b"".join(struct.pack("<H", index) for index in range(len(names))), 2)
    directory = struct.pack(
        "<IIHHIIIIIII",
        0,
        0,
        0,
        0,
        name_rva,
        1,
        len(names),
        len(names),
        functions,
        name_table,
        ordinals,
    )
    return section.put(directory, 4), len(directory)


def _imports(section: _Section, imports: Mapping[str, Sequence[str]]) -> tuple[int, int]:
    descriptors = []
    for dll, functions in imports.items():
        dll_rva = section.put(dll.encode() + b"\0", 2)
        hints = [section.put(b"\0\0" + function.encode() + b"\0", 2) for function in functions]
        thunks = b"".join(struct.pack("<Q", hint) for hint in hints) + bytes(8)
        lookup, address = section.put(thunks), section.put(thunks)
        descriptors.append(struct.pack("<IIIII", lookup, 0, 0, dll_rva, address))
    table = b"".join(descriptors) + bytes(20)
    return section.put(table, 4), len(table)


def pe_image(
    *,
    imports: Mapping[str, Sequence[str]],
    exports: Sequence[str] = (),
    name: str = "module.dll",
    dll: bool = True,
) -> bytes:
    """The bytes of a PE32+ (x86-64) image importing `imports` {dll: functions}."""
    section = _Section()
    directories = [(0, 0)] * 16
    if exports:
        directories[0] = _exports(section, name, exports)
    if imports:
        directories[1] = _imports(section, imports)
    raw_size = _align(len(section.data), _FILE_ALIGNMENT)
    image_size = _align(_SECTION_RVA + len(section.data), _SECTION_ALIGNMENT)
    characteristics = _EXECUTABLE_IMAGE | _LARGE_ADDRESS_AWARE | (_DLL if dll else 0)
    dos = b"MZ" + bytes(0x3A) + struct.pack("<I", 0x40)
    coff = struct.pack("<HHIIIHH", _AMD64, 1, 0, 0, 0, 240, characteristics)
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B,  # PE32+
        14,
        0,
        0,
        raw_size,
        0,
        0,
        _SECTION_RVA,
        0x180000000,
        _SECTION_ALIGNMENT,
        _FILE_ALIGNMENT,
        6,
        0,
        0,
        0,
        6,
        0,
        0,
        image_size,
        _FILE_ALIGNMENT,
        0,
        3,  # console
        0x160,  # high-entropy VA, dynamic base, NX compatible
        0x100000,
        0x1000,
        0x100000,
        0x1000,
        0,
        16,
    ) + b"".join(struct.pack("<II", rva, size) for rva, size in directories)
    section_header = struct.pack(
        "<8sIIIIIIHHI",
        b".rdata",
        len(section.data),
        _SECTION_RVA,
        raw_size,
        _FILE_ALIGNMENT,
        0,
        0,
        0,
        0,
        _READ_ONLY_DATA,
    )
    headers = dos + b"PE\0\0" + coff + optional + section_header
    headers += bytes(_FILE_ALIGNMENT - len(headers))
    return headers + bytes(section.data) + bytes(raw_size - len(section.data))
