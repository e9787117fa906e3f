"""A ggml backend module as a backend-only layer ships it: what it needs, what it offers.

A module built with `GGML_BACKEND_DL` (`libggml-vulkan.so`, `libggml-cuda.so`,
`ggml-vulkan.dll`) is loaded by the bundle's own ggml (`ggml_backend_load`), which calls its
exported `ggml_backend_init`. Nothing else ships in its layer, so every library it links must
already be there when it loads: the bundle's `ggml-base`, the GPU driver's (the Vulkan loader,
libcuda), the operating system's, or for a CUDA module the CUDA runtime libraries of the
overlay's `cuda-runtime` layer, which the runtime preloads first.
ELF files are read with `elf.read_section`, PE files with `pe.read_pe` (pefile); one format
per platform, chosen from the file's magic bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from llamaship_build.elf import is_elf, read_section
from llamaship_build.errors import BuildError
from llamaship_build.overlay_layers import SYSTEM_LIBRARIES
from llamaship_build.pe import is_pe, read_pe

BACKEND_ENTRY = "ggml_backend_init"
_DT_NEEDED = 1
_ELF_SYMBOL = struct.Struct("<IBBHQQ")
_ELF_DYNAMIC = struct.Struct("<qQ")
_STB_GLOBAL, _STB_WEAK = 1, 2


@dataclass(frozen=True)
class ModuleFormat:
    """A binary format and the libraries a module in it may link without shipping them."""

    name: str
    os: str
    # Exact names (compared in lower case for PE, whose loader ignores case) and prefixes.
    provided: frozenset[str]
    provided_prefixes: tuple[str, ...] = field(default=())
    providers: str = "the bundle, the GPU driver"

    def is_provided(self, library: str) -> bool:
        name = library.lower() if self.name == "PE" else library
        return name in self.provided or name.startswith(self.provided_prefixes)


ELF_FORMAT = ModuleFormat(
    "ELF",
    "linux",
    # glibc and the GCC runtime (the system), ggml-base (the bundle), the Vulkan loader (driver).
    SYSTEM_LIBRARIES | {"libggml-base.so.0", "libvulkan.so.1"},
)
PE_FORMAT = ModuleFormat(
    "PE",
    "windows",
    frozenset(
        {
            "ggml-base.dll",  # the bundle's
            "vulkan-1.dll",  # the GPU driver's Vulkan loader
            "kernel32.dll",
            "msvcp140.dll",  # the MSVC runtime the bundle's own ggml needs too
            "vcruntime140.dll",
            "vcruntime140_1.dll",
        }
    ),
    ("api-ms-win-",),  # the Universal CRT's API sets, part of Windows 10 and later
)
# What a CUDA module links besides the system and the bundle: the CUDA runtime, shipped in the
# cuda-runtime layer (libcuda.so.1, the driver's, is among SYSTEM_LIBRARIES).
CUDA_RUNTIME_LIBRARIES = frozenset({"libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"})
CUDA_ELF_FORMAT = ModuleFormat(
    "ELF",
    "linux",
    SYSTEM_LIBRARIES | {"libggml-base.so.0"} | CUDA_RUNTIME_LIBRARIES,
    providers="the bundle, the GPU driver, the cuda-runtime layer",
)


@dataclass(frozen=True)
class ModuleInfo:
    """A module's format, the libraries it links (in order) and the names it exports."""

    format: ModuleFormat
    needed: tuple[str, ...]
    exports: frozenset[str]


def _strings(dynstr: bytes, offset: int) -> str:
    return dynstr[offset : dynstr.index(b"\0", offset)].decode("utf-8", "replace")


def _read_elf(path: Path) -> ModuleInfo:
    data = path.read_bytes()
    dynstr = read_section(data, ".dynstr")
    dynamic = read_section(data, ".dynamic")
    dynsym = read_section(data, ".dynsym")
    if dynstr is None or dynamic is None or dynsym is None:
        msg = f"{path} is not a 64-bit shared library (no dynamic section): rebuild it"
        raise BuildError(msg)
    needed = [
        _strings(dynstr, value)
        for tag, value in _ELF_DYNAMIC.iter_unpack(dynamic[: len(dynamic) // 16 * 16])
        if tag == _DT_NEEDED
    ]
    exports = {
        _strings(dynstr, name)
        for name, info, other, section, _value, _size in _ELF_SYMBOL.iter_unpack(
            dynsym[: len(dynsym) // 24 * 24]
        )
        if section != 0 and info >> 4 in (_STB_GLOBAL, _STB_WEAK) and other & 3 == 0 and name
    }
    return ModuleInfo(ELF_FORMAT, tuple(needed), frozenset(exports))


def inspect_module(path: Path) -> ModuleInfo:
    """What `path` (an ELF or PE backend module) links and exports."""
    if is_elf(path):
        return _read_elf(path)
    if is_pe(path):
        image = read_pe(path)
        if not image.is_dll:
            msg = f"{path} is a Windows program, not a DLL: a backend module is a DLL"
            raise BuildError(msg)
        return ModuleInfo(PE_FORMAT, image.imports, image.exports)
    msg = f"{path} is neither an ELF nor a PE file: not a ggml backend module"
    raise BuildError(msg)


def check_backend_module(
    path: Path, info: ModuleInfo, module_format: ModuleFormat | None = None
) -> None:
    """Fail, naming every problem, unless `path` is a loadable backend-only module; what it may
    link is `module_format`'s (default: its own format's, for a Vulkan module)."""
    allowed = module_format or info.format
    problems: list[str] = []
    if BACKEND_ENTRY not in info.exports:
        problems.append(
            f"it exports no {BACKEND_ENTRY} (build it with -DGGML_BACKEND_DL=ON "
            "-DBUILD_SHARED_LIBS=ON)"
        )
    unknown = [name for name in info.needed if not allowed.is_provided(name)]
    if unknown:
        problems.append(
            f"it links {', '.join(unknown)}, which neither {allowed.providers} nor "
            f"{allowed.os} provides: a backend-only layer ships nothing else (build without "
            "them, or add them to backend_module.py on purpose)"
        )
    if problems:
        msg = f"{path.name} cannot ship as a backend module: {'; '.join(problems)}"
        raise BuildError(msg)
