"""Every library a bundle's or layer's binaries import is shipped in it or part of a clean OS.

A bundle that runs on the build machine can still fail on a user's: Windows says 0xc0000135
when VCRUNTIME140.dll or MSVCP140.dll is missing and WinError 127 when an OpenMP runtime
(vcomp140.dll, libomp140.x86_64.dll) that llama.cpp's MSVC build imports was not shipped;
macOS refuses an `@rpath/` library the bundle lacks or one under /opt/homebrew. So after each
build every binary of the target's format is read (ELF: DT_NEEDED; PE: the import and delay
import tables, with pefile; Mach-O: every architecture's load commands, with macholib) and
each library it imports must be in the tree (or a tree activated with it) or on a clean
install of that OS. ELF and PE libraries are found by file name anywhere in the trees (the
loaders search the bundle's library folders, RUNPATH `$ORIGIN` and `os.add_dll_directory`);
Mach-O install names are resolved: `@loader_path/` from the binary's folder,
`@executable_path/` from the tree's top, `@rpath/` through the binary's own LC_RPATH entries
(PyInstaller gives every binary one). Weak Mach-O imports may be absent and are not checked.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llamaship_build.elf import ELF_MAGIC, read_section
from llamaship_build.errors import BuildError
from llamaship_build.overlay_layers import SYSTEM_LIBRARIES
from llamaship_build.pe import is_pe, read_pe

# glibc's other libraries (PyInstaller never collects them) besides SYSTEM_LIBRARIES's.
_GLIBC_LIBRARIES = frozenset(
    {
        "libanl.so.1",
        "libBrokenLocale.so.1",
        "libcrypt.so.1",
        "libmvec.so.1",
        "libnsl.so.1",
        "libresolv.so.2",
        "libthread_db.so.1",
        "libutil.so.1",
    }
)
LINUX_SYSTEM = SYSTEM_LIBRARIES | _GLIBC_LIBRARIES
# In System32 on every Windows 10 and later, in lower case. Not here, so shipped or an error:
# the MSVC runtime (vcruntime140*.dll, msvcp140*.dll) and OpenMP (vcomp140.dll, libomp140*.dll).
WINDOWS_SYSTEM = frozenset(
    {
        "advapi32.dll",
        "bcrypt.dll",
        "cfgmgr32.dll",
        "comctl32.dll",
        "comdlg32.dll",
        "crypt32.dll",
        "d3d11.dll",
        "d3d12.dll",
        "dbghelp.dll",
        "dnsapi.dll",
        "dwmapi.dll",
        "dxgi.dll",
        "gdi32.dll",
        "imm32.dll",
        "iphlpapi.dll",
        "kernel32.dll",
        "kernelbase.dll",
        "mpr.dll",
        "msvcrt.dll",
        "mswsock.dll",
        "ncrypt.dll",
        "netapi32.dll",
        "ntdll.dll",
        "ole32.dll",
        "oleaut32.dll",
        "opengl32.dll",
        "powrprof.dll",
        "psapi.dll",
        "rpcrt4.dll",
        "secur32.dll",
        "setupapi.dll",
        "shell32.dll",
        "shlwapi.dll",
        "ucrtbase.dll",
        "user32.dll",
        "userenv.dll",
        "uxtheme.dll",
        "version.dll",
        "winhttp.dll",
        "wininet.dll",
        "winmm.dll",
        "wintrust.dll",
        "ws2_32.dll",
    }
)
# API sets: the Universal CRT (api-ms-win-crt-*) and the other contracts Windows resolves.
WINDOWS_SYSTEM_PREFIXES = ("api-ms-win-", "ext-ms-win-")
# Sealed by System Integrity Protection: only macOS itself puts libraries there.
MACOS_SYSTEM_PREFIXES = ("/usr/lib/", "/System/Library/")

_DT_NEEDED = 1
_ELF_DYNAMIC = struct.Struct("<qQ")
_HEAD = 8


@dataclass(frozen=True)
class Trees:
    """The tree being checked and the trees activated with it (their files count as shipped)."""

    root: Path
    alongside: tuple[Path, ...] = ()

    def all(self) -> tuple[Path, ...]:
        return (self.root, *self.alongside)

    def names(self) -> frozenset[str]:
        """Every file name (links included) in the trees."""
        return frozenset(
            name for top in self.all() for _folder, _dirs, files in os.walk(top) for name in files
        )

    def holds(self, path: str) -> bool:
        """Whether `path` (absolute) names a file inside one of the trees."""
        normal = Path(os.path.normpath(path))
        return normal.is_file() and any(normal.is_relative_to(top) for top in self.all())


class BinaryFormat(Protocol):
    """One executable format: which files are in it, what they import, what is missing."""

    name: str
    os_name: str

    def recognises(self, head: bytes) -> bool:
        """Whether a file starting with `head` (its first 8 bytes) is in this format."""
        ...

    def imports(self, path: Path) -> tuple[str, ...]:
        """The libraries `path` imports, as its loader reads them."""
        ...

    def missing(self, path: Path, trees: Trees, names: frozenset[str]) -> tuple[str, ...]:
        """The imports of `path` that neither `trees` (file `names`) nor the OS provide."""
        ...


class ElfFormat:
    """Linux: DT_NEEDED names, found by file name in the trees or among glibc and the driver."""

    name = "ELF"
    os_name = "Linux"

    def recognises(self, head: bytes) -> bool:
        return head.startswith(ELF_MAGIC)

    def imports(self, path: Path) -> tuple[str, ...]:
        data = path.read_bytes()
        dynamic, dynstr = read_section(data, ".dynamic"), read_section(data, ".dynstr")
        if dynamic is None or dynstr is None:
            return ()  # static, or not a 64-bit little-endian file
        return tuple(
            dynstr[value : dynstr.index(b"\0", value)].decode("utf-8", "replace")
            for tag, value in _ELF_DYNAMIC.iter_unpack(dynamic[: len(dynamic) // 16 * 16])
            if tag == _DT_NEEDED
        )

    def missing(self, path: Path, trees: Trees, names: frozenset[str]) -> tuple[str, ...]:
        return tuple(
            name for name in self.imports(path) if name not in names and name not in LINUX_SYSTEM
        )


class PeFormat:
    """Windows: imported and delay-loaded DLLs, found by file name in any case."""

    name = "PE"
    os_name = "Windows"

    def recognises(self, head: bytes) -> bool:
        return head.startswith(b"MZ")

    def imports(self, path: Path) -> tuple[str, ...]:
        return read_pe(path).imports if is_pe(path) else ()

    def missing(self, path: Path, trees: Trees, names: frozenset[str]) -> tuple[str, ...]:
        shipped = {name.lower() for name in names} | WINDOWS_SYSTEM
        return tuple(
            name
            for name in self.imports(path)
            if name.lower() not in shipped and not name.lower().startswith(WINDOWS_SYSTEM_PREFIXES)
        )


class MachOFormat:
    """macOS: install names of every architecture, resolved as dyld would."""

    name = "Mach-O"
    os_name = "macOS"
    _MAGICS = (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"\xca\xfe\xba\xbf")

    def recognises(self, head: bytes) -> bool:
        # 0xcafebabe is also a Java class file: a fat header's architecture count is small.
        if head[:4] in self._MAGICS[2:]:
            return 0 < int.from_bytes(head[4:8], "big") < 16
        return head[:4] in self._MAGICS[:2]

    def _commands(self, path: Path) -> tuple[list[str], list[str]]:
        """(required install names, LC_RPATH entries) over every architecture."""
        from macholib import mach_o
        from macholib.MachO import MachO

        required = (
            mach_o.LC_LOAD_DYLIB,
            mach_o.LC_REEXPORT_DYLIB,
            mach_o.LC_LOAD_UPWARD_DYLIB,
            mach_o.LC_LAZY_LOAD_DYLIB,
        )
        try:
            image = MachO(str(path))
        except (ValueError, struct.error) as error:
            msg = f"{path} is not a valid Mach-O file ({error}): rebuild it"
            raise BuildError(msg) from None
        names: list[str] = []
        rpaths: list[str] = []
        for header in image.headers:
            for load, _command, data in header.commands:
                if load.cmd in required or load.cmd == mach_o.LC_RPATH:
                    text = data.rstrip(b"\0").decode("utf-8", "replace")
                    (rpaths if load.cmd == mach_o.LC_RPATH else names).append(text)
        return list(dict.fromkeys(names)), list(dict.fromkeys(rpaths))

    def imports(self, path: Path) -> tuple[str, ...]:
        return tuple(self._commands(path)[0])

    def missing(self, path: Path, trees: Trees, names: frozenset[str]) -> tuple[str, ...]:
        required, rpaths = self._commands(path)
        return tuple(name for name in required if not macho_resolves(name, path, rpaths, trees))


def macho_resolves(name: str, binary: Path, rpaths: Sequence[str], trees: Trees) -> bool:
    """Whether dyld finds install name `name` of `binary` (LC_RPATH `rpaths`) in the macOS
    system folders or inside `trees` (`@executable_path` is the top of the checked tree)."""

    def expand(text: str) -> str:
        for token, folder in (("@loader_path", binary.parent), ("@executable_path", trees.root)):
            if text.startswith(token):
                return str(folder) + text[len(token) :]
        return text

    candidates = (
        [expand(rpath) + name[len("@rpath") :] for rpath in rpaths]
        if name.startswith("@rpath/")
        else [expand(name)]
    )
    return any(
        candidate.startswith(MACOS_SYSTEM_PREFIXES) or trees.holds(candidate)
        for candidate in candidates
    )


FORMATS: Mapping[str, BinaryFormat] = {
    "linux": ElfFormat(),
    "windows": PeFormat(),
    "macos": MachOFormat(),
}


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))


def _binaries(root: Path, binary_format: BinaryFormat) -> Iterator[Path]:
    for folder, _dirs, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            with path.open("rb") as handle:
                if binary_format.recognises(handle.read(_HEAD)):
                    yield path


@dataclass(frozen=True)
class ImportReport:
    """How many binaries were read, and each one's (relative path) missing libraries."""

    checked: int
    missing: Mapping[str, tuple[str, ...]]


def find_missing(root: Path, platform: str, alongside: Sequence[Path] = ()) -> ImportReport:
    """Read every binary of `platform`'s format under `root`; what each lacks."""
    binary_format = _format(platform)
    # Absolute, so install names resolved from a binary's folder compare with the tops.
    trees = Trees(_absolute(root), tuple(_absolute(top) for top in alongside))
    names = trees.names()
    checked = 0
    missing: dict[str, tuple[str, ...]] = {}
    for path in _binaries(trees.root, binary_format):
        checked += 1
        lacking = binary_format.missing(path, trees, names)
        if lacking:
            missing[path.relative_to(trees.root).as_posix()] = lacking
    return ImportReport(checked, missing)


def check_imports(root: Path, platform: str, alongside: Sequence[Path] = ()) -> int:
    """Fail, naming every binary and library, unless all imports are shipped or the OS's;
    returns how many binaries were checked (at least one). `platform`: linux, windows, macos."""
    if not root.is_dir():
        msg = f"{root} is not a directory: name the bundle or layer folder to check"
        raise BuildError(msg)
    report = find_missing(root, platform, alongside)
    if report.checked == 0:
        msg = (
            f"{root} holds no {_format(platform).name} binary: it is not a {platform} bundle or "
            "layer (choose the platform it was built for)"
        )
        raise BuildError(msg)
    if report.missing:
        os_name = _format(platform).os_name
        details = "; ".join(
            f"{path} needs {', '.join(names)}" for path, names in report.missing.items()
        )
        msg = (
            f"{root} would fail to load on a clean {os_name} install: {details}. Ship each "
            "library in the bundle (the spec's binaries) or link it statically; if every "
            f"{os_name} install has it, add it to packaging/llamaship_build/imports_check.py"
        )
        raise BuildError(msg)
    return report.checked


def _format(platform: str) -> BinaryFormat:
    try:
        return FORMATS[platform]
    except KeyError:
        msg = f"no import check for platform {platform!r}: choose one of {', '.join(FORMATS)}"
        raise BuildError(msg) from None
