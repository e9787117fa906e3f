"""Overlay layer manifests and the release index: typed, validated, canonically serialized.

Both documents are JSON; their signatures cover the exact bytes, so the build side writes them
with `dump_manifest` / `dump_index` and the runtime parses the bytes it verified. Parsing checks
every field and reports all problems at once.

A `files` entry may be a symbolic link inside the layer (`"link": "<relative target>"`, e.g.
`llama_cpp/lib/libggml.so` -> `libggml.so.0`): its `size` and `sha256` are those of the target
file, which must itself be a regular file listed in the manifest, so reading the path (which
follows the link) yields the listed hash. `unpacked_size` is the sum of the regular files' sizes.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llamaship.errors import LlamashipError

if TYPE_CHECKING:
    from llamaship.decide import OverlayRequirements

FORMAT = 1
LAYER_NAMES = ("cuda-runtime", "llama-cuda")
# The top-level directories each layer may hold (see the shared store contract).
LAYER_ROOTS: Mapping[str, tuple[str, ...]] = {
    "cuda-runtime": ("lib", "bin"),
    "llama-cuda": ("llama_cpp",),
}
# The layer a layer must require, or None when it stands alone.
REQUIRED_LAYER: Mapping[str, str | None] = {"cuda-runtime": None, "llama-cuda": "cuda-runtime"}
ARCHIVE_SUFFIX = ".tar.zst"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_LAYER_ID = re.compile(r"[a-z-]+-[0-9a-f]{16}")
_CUDA_VERSION = re.compile(r"\d+\.\d+")
_DRIVER_VERSION = re.compile(r"\d+(\.\d+){1,2}")
_CUDA_ARCH = re.compile(r"\d{2,3}[af]?")
_TAG = re.compile(r"[a-z0-9_]+")
_URL = re.compile(r"[^\s\x00]+")
_OS_NAMES = frozenset({"linux", "windows"})


class ManifestError(LlamashipError):
    """A layer manifest or release index is malformed; the overlay is not used."""

    exit_code = 4


@dataclass(frozen=True)
class ArchiveRef:
    """The compressed layer archive a manifest describes."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FileEntry:
    """One file of an unpacked layer; `link` is set for a symlink (relative target)."""

    path: str
    size: int
    sha256: str
    link: str | None = None


@dataclass(frozen=True)
class RequiredLayer:
    """The manifest's `requires`: the exact other layer this one runs with."""

    layer: str
    id: str
    sha256: str


@dataclass(frozen=True)
class LayerManifest:
    """A signed description of one overlay layer (`cuda-runtime` or `llama-cuda`)."""

    format: int
    layer: str
    overlay_version: str
    serial: int
    requires: RequiredLayer | None
    llama_cpp_version: str
    python_tag: str
    platform: str
    cuda_version: str
    min_driver: Mapping[str, str]
    cuda_archs: tuple[str, ...]
    ptx_archs: tuple[str, ...]
    min_vram_mb: int
    archive: ArchiveRef
    unpacked_size: int
    files: tuple[FileEntry, ...]
    created: str


@dataclass(frozen=True)
class LayerRef:
    """One layer of a release in the index: where its manifest and archive are."""

    layer: str
    id: str
    manifest: str
    manifest_sha256: str
    archive: str


@dataclass(frozen=True)
class ReleaseEntry:
    """One overlay release in the index: its identity and its layers."""

    overlay_version: str
    serial: int
    platform: str
    python_tag: str
    llama_cpp_version: str
    cuda_version: str
    layers: tuple[LayerRef, ...]

    def layer(self, name: str) -> LayerRef:
        """The entry's layer called `name` (every valid entry has each layer once)."""
        for ref in self.layers:
            if ref.layer == name:
                return ref
        msg = f"release {self.overlay_version} has no {name} layer"
        raise ManifestError(msg)


@dataclass(frozen=True)
class ReleaseIndex:
    """The signed list of published overlays (`releases.json`)."""

    format: int
    serial: int
    created: str
    overlays: tuple[ReleaseEntry, ...]


def layer_id(manifest: LayerManifest) -> str:
    """The store's name for a layer: its kind plus the start of its archive hash."""
    return f"{manifest.layer}-{manifest.archive.sha256[:16]}"


def safe_relative_path(path: str) -> str | None:
    """Why `path` is not a safe relative POSIX path inside a layer, or None if it is."""
    if not path:
        return "is empty"
    if "\\" in path or "\x00" in path:
        return "holds a backslash or NUL"
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return "is absolute"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' component"
    return None


_MISSING = object()


class _Reader:
    """Reads typed fields from decoded JSON, recording each problem under its field path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{where} {text}")

    def obj(self, value: Any, where: str) -> dict[str, Any] | None:
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.problem(where, f"must be a JSON object (got {type(value).__name__})")
            return None
        return value

    def field(self, data: Mapping[str, Any], key: str, where: str) -> Any:
        """The value at `key`, or `_MISSING` (recorded as a problem)."""
        if key not in data:
            self.problem(f"{where}{key}", "is missing")
            return _MISSING
        return data[key]

    def text(self, data: Mapping[str, Any], key: str, where: str,
             pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
        value = self.field(data, key, where)
        if value is _MISSING:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{where}{key}", f"must be a non-empty string (got {value!r})")
            return ""
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(f"{where}{key}", f"must be {hint} (got {value!r})")
        return value

    def integer(self, data: Mapping[str, Any], key: str, where: str, minimum: int = 0) -> int:
        value = self.field(data, key, where)
        if value is _MISSING:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.problem(f"{where}{key}", f"must be a whole number >= {minimum} (got {value!r})")
            return 0
        return value

    def sha256(self, data: Mapping[str, Any], key: str, where: str) -> str:
        return self.text(data, key, where, _SHA256, "64 lowercase hex digits (sha256)")

    def choice(self, data: Mapping[str, Any], key: str, where: str,
               choices: tuple[str, ...]) -> str:
        value = self.text(data, key, where)
        if value and value not in choices:
            self.problem(f"{where}{key}", f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def timestamp(self, data: Mapping[str, Any], key: str, where: str) -> str:
        value = self.text(data, key, where)
        if value:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                self.problem(f"{where}{key}", f"must be an ISO 8601 time (got {value!r})")
        return value

    def format(self, data: Mapping[str, Any]) -> int:
        value = self.integer(data, "format", "", minimum=1)
        if value and value != FORMAT:
            self.problem("format", f"is {value}; this llamaship reads format {FORMAT} only "
                         "(update the application to use newer overlays)")
        return value

    def items(self, data: Mapping[str, Any], key: str, where: str,
              parse: Callable[[Any, str], Any]) -> tuple[Any, ...]:
        value = self.field(data, key, where)
        if value is _MISSING:
            return ()
        if not isinstance(value, list):
            self.problem(f"{where}{key}", f"must be a JSON list (got {type(value).__name__})")
            return ()
        parsed = (parse(item, f"{where}{key}[{index}]") for index, item in enumerate(value))
        return tuple(item for item in parsed if item is not None)

    def arch(self, value: Any, where: str) -> str | None:
        if not isinstance(value, str) or not _CUDA_ARCH.fullmatch(value):
            self.problem(where, f"must be a CUDA architecture like '75' or '120' (got {value!r})")
            return None
        return value


def _decode(data: bytes, origin: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        msg = f"{origin} is not valid UTF-8 JSON ({error}); download it again"
        raise ManifestError(msg) from None


def _fail(reader: _Reader, origin: str) -> None:
    if reader.problems:
        listed = "; ".join(reader.problems)
        msg = (f"{origin} is invalid ({len(reader.problems)} problem(s)): {listed}. "
               "The overlay cannot be used; rebuild it (nox -s overlay) or report it to its publisher")
        raise ManifestError(msg)


def _parse_requires(reader: _Reader, data: Mapping[str, Any], layer: str) -> RequiredLayer | None:
    value = reader.field(data, "requires", "")
    wanted = REQUIRED_LAYER.get(layer)
    if value is _MISSING:
        return None
    if value is None:
        if wanted is not None:
            reader.problem("requires", f"must name the {wanted} layer a {layer} layer runs with")
        return None
    block = reader.obj(value, "requires")
    if block is None:
        return None
    if wanted is None and layer in REQUIRED_LAYER:
        reader.problem("requires", f"must be null for a {layer} layer")
    required = RequiredLayer(
        layer=reader.choice(block, "layer", "requires.", LAYER_NAMES),
        id=reader.text(block, "id", "requires.", _LAYER_ID, "a layer id like 'cuda-runtime-<16 hex>'"),
        sha256=reader.sha256(block, "sha256", "requires."),
    )
    if wanted is not None and required.layer and required.layer != wanted:
        reader.problem("requires.layer", f"must be {wanted} for a {layer} layer")
    if required.id and required.layer and not required.id.startswith(f"{required.layer}-"):
        reader.problem("requires.id", f"must start with '{required.layer}-'")
    if required.id and required.sha256 and not required.id.endswith(f"-{required.sha256[:16]}"):
        reader.problem("requires.id", "must end with the first 16 hex digits of requires.sha256")
    return required


def _parse_min_driver(reader: _Reader, data: Mapping[str, Any]) -> dict[str, str]:
    block = reader.obj(reader.field(data, "min_driver", ""), "min_driver")
    if block is None:
        return {}
    if not block:
        reader.problem("min_driver", "must name the minimum driver for at least one OS")
    drivers: dict[str, str] = {}
    for os_name, version in sorted(block.items()):
        if os_name not in _OS_NAMES:
            reader.problem(f"min_driver.{os_name}", f"is not an OS llamaship knows "
                           f"({', '.join(sorted(_OS_NAMES))})")
        elif not isinstance(version, str) or not _DRIVER_VERSION.fullmatch(version):
            reader.problem(f"min_driver.{os_name}",
                           f"must be a driver version like '580.65.06' (got {version!r})")
        else:
            drivers[os_name] = version
    return drivers


def _parse_archive(reader: _Reader, data: Mapping[str, Any]) -> ArchiveRef:
    block = reader.obj(reader.field(data, "archive", ""), "archive")
    if block is None:
        return ArchiveRef(name="", size=0, sha256="")
    name = reader.text(block, "name", "archive.")
    if name and (safe_relative_path(name) or "/" in name or not name.endswith(ARCHIVE_SUFFIX)):
        reader.problem("archive.name", f"must be a plain file name ending in {ARCHIVE_SUFFIX} "
                       f"(got {name!r})")
    return ArchiveRef(name=name, size=reader.integer(block, "size", "archive.", minimum=1),
                      sha256=reader.sha256(block, "sha256", "archive."))


def _file_parser(reader: _Reader, roots: tuple[str, ...]) -> Callable[[Any, str], FileEntry | None]:
    def parse(value: Any, where: str) -> FileEntry | None:
        block = reader.obj(value, where)
        if block is None:
            return None
        prefix = f"{where}."
        path = reader.text(block, "path", prefix)
        unsafe = safe_relative_path(path) if path else None
        if unsafe:
            reader.problem(f"{prefix}path", f"{path!r} {unsafe}: it must stay inside the layer")
        elif path and roots and path.split("/")[0] not in roots:
            reader.problem(f"{prefix}path", f"{path!r} is outside the layer's top-level "
                           f"directories ({', '.join(roots)})")
        link = block.get("link")
        if link is not None and (not isinstance(link, str) or not link):
            reader.problem(f"{prefix}link", f"must be a relative link target (got {link!r})")
            link = None
        return FileEntry(path=path, size=reader.integer(block, "size", prefix),
                         sha256=reader.sha256(block, "sha256", prefix), link=link)

    return parse


def _check_files(reader: _Reader, files: tuple[FileEntry, ...], unpacked_size: int | None) -> None:
    by_path: dict[str, FileEntry] = {}
    for entry in files:
        if entry.path in by_path:
            reader.problem("files", f"lists {entry.path!r} twice")
        by_path[entry.path] = entry
    for entry in files:
        parents = entry.path.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in by_path:
                reader.problem("files", f"{entry.path!r} lies under {'/'.join(parents[:depth])!r}, "
                               "which is listed as a file")
                break
    for entry in files:
        if entry.link is None:
            continue
        target_path = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.link))
        target = by_path.get(target_path)
        if entry.link.startswith("/") or safe_relative_path(target_path) or target is None:
            reader.problem("files", f"link {entry.path!r} -> {entry.link!r} must point to a "
                           "regular file listed in the same layer")
        elif target.link is not None:
            reader.problem("files", f"link {entry.path!r} points to another link")
        elif (target.size, target.sha256) != (entry.size, entry.sha256):
            reader.problem("files", f"link {entry.path!r} must repeat its target's size and sha256")
    if not files:
        reader.problem("files", "must list at least one file")
    regular_bytes = sum(entry.size for entry in files if entry.link is None)
    if files and unpacked_size is not None and regular_bytes != unpacked_size:
        reader.problem("unpacked_size", f"is {unpacked_size} but the regular files add up to "
                       f"{regular_bytes}")


def parse_manifest(data: bytes, *, origin: str = "overlay manifest") -> LayerManifest:
    """Validate and type a layer manifest; raises one `ManifestError` listing every problem."""
    reader = _Reader()
    top = reader.obj(_decode(data, origin), "the document")
    _fail(reader, origin)
    assert top is not None  # _fail raised otherwise
    fmt = reader.format(top)
    layer = reader.choice(top, "layer", "", LAYER_NAMES)
    unpacked_size = reader.integer(top, "unpacked_size", "")
    files = reader.items(top, "files", "", _file_parser(reader, LAYER_ROOTS.get(layer, ())))
    manifest = LayerManifest(
        format=fmt,
        layer=layer,
        overlay_version=reader.text(top, "overlay_version", ""),
        serial=reader.integer(top, "serial", ""),
        requires=_parse_requires(reader, top, layer),
        llama_cpp_version=reader.text(top, "llama_cpp_version", ""),
        python_tag=reader.text(top, "python_tag", "", _TAG, "a wheel python tag like 'py3'"),
        platform=reader.text(top, "platform", "", _TAG, "a platform tag like 'linux_x86_64'"),
        cuda_version=reader.text(top, "cuda_version", "", _CUDA_VERSION, "MAJOR.MINOR like '13.0'"),
        min_driver=_parse_min_driver(reader, top),
        cuda_archs=reader.items(top, "cuda_archs", "", reader.arch),
        ptx_archs=reader.items(top, "ptx_archs", "", reader.arch),
        min_vram_mb=reader.integer(top, "min_vram_mb", ""),
        archive=_parse_archive(reader, top),
        unpacked_size=unpacked_size,
        files=files,
        created=reader.timestamp(top, "created", ""),
    )
    if isinstance(top.get("files"), list):
        _check_files(reader, files, unpacked_size if "unpacked_size" in top else None)
    if "cuda_archs" in top and "ptx_archs" in top and not (manifest.cuda_archs or manifest.ptx_archs):
        reader.problem("cuda_archs", "and ptx_archs are both empty: the layer runs on no GPU")
    _fail(reader, origin)
    return manifest


def _parse_layer_ref(reader: _Reader) -> Callable[[Any, str], LayerRef | None]:
    def parse(value: Any, where: str) -> LayerRef | None:
        block = reader.obj(value, where)
        if block is None:
            return None
        prefix = f"{where}."
        ref = LayerRef(
            layer=reader.choice(block, "layer", prefix, LAYER_NAMES),
            id=reader.text(block, "id", prefix, _LAYER_ID, "a layer id like 'llama-cuda-<16 hex>'"),
            manifest=reader.text(block, "manifest", prefix, _URL, "a URL without spaces"),
            manifest_sha256=reader.sha256(block, "manifest_sha256", prefix),
            archive=reader.text(block, "archive", prefix, _URL, "a URL without spaces"),
        )
        if ref.layer and ref.id and not ref.id.startswith(f"{ref.layer}-"):
            reader.problem(f"{prefix}id", f"must start with '{ref.layer}-'")
        return ref

    return parse


def _parse_release(reader: _Reader, index_serial: int) -> Callable[[Any, str], ReleaseEntry | None]:
    parse_ref = _parse_layer_ref(reader)

    def parse(value: Any, where: str) -> ReleaseEntry | None:
        block = reader.obj(value, where)
        if block is None:
            return None
        prefix = f"{where}."
        entry = ReleaseEntry(
            overlay_version=reader.text(block, "overlay_version", prefix),
            serial=reader.integer(block, "serial", prefix),
            platform=reader.text(block, "platform", prefix, _TAG, "a platform tag"),
            python_tag=reader.text(block, "python_tag", prefix, _TAG, "a python tag"),
            llama_cpp_version=reader.text(block, "llama_cpp_version", prefix),
            cuda_version=reader.text(block, "cuda_version", prefix, _CUDA_VERSION, "MAJOR.MINOR"),
            layers=reader.items(block, "layers", prefix, parse_ref),
        )
        if entry.serial > index_serial:
            reader.problem(f"{prefix}serial", f"{entry.serial} is newer than the index serial "
                           f"{index_serial}")
        names = sorted(ref.layer for ref in entry.layers)
        if isinstance(block.get("layers"), list) and names != sorted(LAYER_NAMES):
            reader.problem(f"{prefix}layers", f"must list each of {', '.join(LAYER_NAMES)} once "
                           f"(got {', '.join(names) or 'none'})")
        return entry

    return parse


def parse_index(data: bytes, *, origin: str = "release index") -> ReleaseIndex:
    """Validate and type a release index; raises one `ManifestError` listing every problem."""
    reader = _Reader()
    top = reader.obj(_decode(data, origin), "the document")
    _fail(reader, origin)
    assert top is not None  # _fail raised otherwise
    serial = reader.integer(top, "serial", "")
    index = ReleaseIndex(
        format=reader.format(top),
        serial=serial,
        created=reader.timestamp(top, "created", ""),
        overlays=reader.items(top, "overlays", "", _parse_release(reader, serial)),
    )
    _fail(reader, origin)
    return index


def to_requirements(manifest: LayerManifest, os_name: str) -> OverlayRequirements:
    """What the overlay needs from this machine (`os_name`: 'linux' or 'windows')."""
    from llamaship.decide import OverlayRequirements

    min_driver = manifest.min_driver.get(os_name)
    if min_driver is None:
        known = ", ".join(sorted(manifest.min_driver)) or "none"
        msg = (f"overlay {manifest.overlay_version} names no minimum driver for {os_name} "
               f"(only for: {known}): it was not built for this OS")
        raise ManifestError(msg)
    return OverlayRequirements(
        overlay_version=manifest.overlay_version,
        serial=manifest.serial,
        cuda_version=manifest.cuda_version,
        min_driver=min_driver,
        cuda_archs=manifest.cuda_archs,
        ptx_archs=manifest.ptx_archs,
        min_vram_mb=manifest.min_vram_mb,
    )


def _canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def manifest_document(manifest: LayerManifest) -> dict[str, Any]:
    """The manifest as the JSON object `parse_manifest` reads."""
    requires = manifest.requires
    return {
        "format": manifest.format,
        "layer": manifest.layer,
        "overlay_version": manifest.overlay_version,
        "serial": manifest.serial,
        "requires": None if requires is None else
        {"layer": requires.layer, "id": requires.id, "sha256": requires.sha256},
        "llama_cpp_version": manifest.llama_cpp_version,
        "python_tag": manifest.python_tag,
        "platform": manifest.platform,
        "cuda_version": manifest.cuda_version,
        "min_driver": dict(manifest.min_driver),
        "cuda_archs": list(manifest.cuda_archs),
        "ptx_archs": list(manifest.ptx_archs),
        "min_vram_mb": manifest.min_vram_mb,
        "archive": {"name": manifest.archive.name, "size": manifest.archive.size,
                    "sha256": manifest.archive.sha256},
        "unpacked_size": manifest.unpacked_size,
        "files": [
            {"path": entry.path, "size": entry.size, "sha256": entry.sha256}
            | ({} if entry.link is None else {"link": entry.link})
            for entry in manifest.files
        ],
        "created": manifest.created,
    }


def dump_manifest(manifest: LayerManifest) -> bytes:
    """Canonical manifest bytes (sorted keys, compact, UTF-8): what gets signed."""
    return _canonical(manifest_document(manifest))


def dump_index(index: ReleaseIndex) -> bytes:
    """Canonical release index bytes (sorted keys, compact, UTF-8): what gets signed."""
    return _canonical({
        "format": index.format,
        "serial": index.serial,
        "created": index.created,
        "overlays": [
            {
                "overlay_version": entry.overlay_version,
                "serial": entry.serial,
                "platform": entry.platform,
                "python_tag": entry.python_tag,
                "llama_cpp_version": entry.llama_cpp_version,
                "cuda_version": entry.cuda_version,
                "layers": [
                    {"layer": ref.layer, "id": ref.id, "manifest": ref.manifest,
                     "manifest_sha256": ref.manifest_sha256, "archive": ref.archive}
                    for ref in entry.layers
                ],
            }
            for entry in index.overlays
        ],
    })
