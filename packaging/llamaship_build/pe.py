"""Read what a Windows DLL needs and offers: its imported DLLs and exported names (pefile).

The overlay staging decides what a layer ships from these, as it does from DT_NEEDED for ELF
libraries: a ggml backend module must export `ggml_backend_init`, and every DLL it imports must
come from the layer, the bundle, the GPU driver or Windows itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError

_MACHINES = {0x8664: "x86_64", 0xAA64: "arm64", 0x14C: "x86"}
_IMAGE_FILE_DLL = 0x2000


@dataclass(frozen=True)
class PeImage:
    """One PE file's machine, whether it is a DLL, its imported DLLs and its exports."""

    machine: str
    is_dll: bool
    imports: tuple[str, ...]
    exports: frozenset[str]


def is_pe(path: Path) -> bool:
    """Whether `path` starts like a PE image (MZ header pointing at a PE signature)."""
    with open(path, "rb") as file:
        header = file.read(0x40)
        if len(header) < 0x40 or header[:2] != b"MZ":
            return False
        file.seek(int.from_bytes(header[0x3C:0x40], "little"))
        return file.read(4) == b"PE\0\0"


def read_pe(path: Path) -> PeImage:
    """The imports (normal and delay-loaded, in file order) and exports of a PE file."""
    import pefile

    try:
        image = pefile.PE(str(path), fast_load=True)
    except pefile.PEFormatError as error:
        msg = f"{path} is not a valid PE file ({error}): rebuild it"
        raise BuildError(msg) from None
    try:
        image.parse_data_directories(
            directories=[
                pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"],
                pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT"],
                pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"],
            ]
        )
        imports = [
            entry.dll.decode("ascii", "replace")
            for attribute in ("DIRECTORY_ENTRY_IMPORT", "DIRECTORY_ENTRY_DELAY_IMPORT")
            for entry in getattr(image, attribute, ())
        ]
        export_directory = getattr(image, "DIRECTORY_ENTRY_EXPORT", None)
        exports = frozenset(
            symbol.name.decode("ascii", "replace")
            for symbol in (export_directory.symbols if export_directory else ())
            if symbol.name
        )
        machine = _MACHINES.get(image.FILE_HEADER.Machine, hex(image.FILE_HEADER.Machine))
        is_dll = bool(image.FILE_HEADER.Characteristics & _IMAGE_FILE_DLL)
    finally:
        image.close()
    return PeImage(
        machine=machine,
        is_dll=is_dll,
        imports=tuple(dict.fromkeys(imports)),
        exports=exports,
    )
