"""Small signed overlay releases for tests, packed with the build side's own functions
(`layer_files`, `write_layer_archive`, `write_release_index`), plus hand-made hostile archives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from llamaship.io.http_session import DownloadLimits
from llamaship.overlay.install import InstallOptions
from llamaship.overlay.select import Target
from llamaship_build.overlay_archive import MTIME, layer_files, write_layer_archive
from llamaship_build.release_index import write_release_index
from llamaship_contract.detection import DetectionReport, GpuInfo
from llamaship_contract.layer_files import ArchiveRef, FileEntry
from llamaship_contract.overlay import FORMAT, LayerManifest, RequiredLayer, dump_manifest, layer_id
from llamaship_contract.release_index import (
    OVERLAYS_NAME,
    ReleaseEntry,
    dump_index,
    known_entries,
    parse_index,
    parse_release_list,
)
from llamaship_contract.signing import sign

LLAMA_CPP_VERSION = "0.3.36"
CUDA_VERSION = "13.0"
GPU_REPORT = DetectionReport(
    source="nvml",
    driver_version="580.95.05",
    cuda_driver_version=CUDA_VERSION,
    gpus=(
        GpuInfo(
            index=0,
            name="NVIDIA GeForce RTX 2060",
            uuid="GPU-0",
            vram_total_mb=6144,
            vram_free_mb=5760,
            compute_capability="7.5",
        ),
    ),
)
TARGET = Target(
    platform="linux_x86_64",
    os_name="linux",
    python_tags=("py3",),
    llama_cpp_version=LLAMA_CPP_VERSION,
    machine=GPU_REPORT,
)
# Fast retries and a short overall deadline (0.5 s grace + size at >= 256 KiB/s).
FAST_LIMITS = DownloadLimits(
    connect_timeout_s=5.0,
    read_timeout_s=5.0,
    min_bytes_per_second=256 * 1024,
    deadline_grace_s=0.5,
    max_attempts=3,
    retry_pause_s=0.0,
)
FAST_OPTIONS = InstallOptions(limits=FAST_LIMITS, probe_timeout_s=60.0, lock_timeout_s=0.2)
_LIB_SIZE = 48 * 1024


@dataclass(frozen=True)
class Keys:
    private: str
    public: str


@dataclass(frozen=True)
class Link:
    """A symlink in a test layer (relative target)."""

    target: str


Files = Mapping[str, "bytes | Link"]
ArchiveWriter = Callable[[Path, Sequence[FileEntry]], bytes]
"""Makes a layer's .tar.zst bytes from its staged root and file list (for hostile archives)."""


def _payload(name: str, size: int = _LIB_SIZE) -> bytes:
    """`size` incompressible bytes determined by `name` (a sha256 chain)."""
    block = hashlib.sha256(name.encode()).digest()
    blocks = []
    for _ in range(size // len(block) + 1):
        blocks.append(block)
        block = hashlib.sha256(block).digest()
    return b"".join(blocks)[:size]


def runtime_files(flavour: str = "13.0", size: int = _LIB_SIZE) -> dict[str, bytes | Link]:
    return {
        "lib/libcudart.so.13": _payload(f"cudart {flavour}", size),
        "lib/libcublas.so.13": _payload(f"cublas {flavour}", size),
        "lib/libcudart.so": Link("libcudart.so.13"),
    }


def llama_files(mark: str, module: bytes | None = None) -> dict[str, bytes | Link]:
    """A llama-cuda layer: its backend module (`module`, else bytes marked `mark`) and notice."""
    return {
        "backends/libggml-cuda.so": _payload(f"ggml-cuda {mark}") if module is None else module,
        "licenses/llama.cpp-LICENSE.txt": b"MIT",
    }


@dataclass(frozen=True)
class ReleaseSpec:
    """One overlay release of test layers; overrides change signed manifest fields."""

    overlay_version: str = "0.3.36-cu13.0-1"
    serial: int = 1
    llama_cpp_version: str = LLAMA_CPP_VERSION
    cuda_version: str = CUDA_VERSION
    platform: str = "linux_x86_64"
    runtime: Files = field(default_factory=runtime_files)
    llama: Files | None = None
    runtime_overrides: Mapping[str, Any] = field(default_factory=dict)
    llama_overrides: Mapping[str, Any] = field(default_factory=dict)
    runtime_archive: ArchiveWriter | None = None
    llama_archive: ArchiveWriter | None = None


@dataclass(frozen=True)
class VulkanSpec:
    """One Vulkan overlay release: a llama-vulkan layer around `module` (any bytes)."""

    overlay_version: str = "0.3.36-vk-1"
    serial: int = 1
    llama_cpp_version: str = LLAMA_CPP_VERSION
    platform: str = "linux_x86_64"
    vulkan_api: str = "1.2"
    min_vram_mb: int = 512
    module: bytes = field(default_factory=lambda: _payload("ggml-vulkan"))


def tar_zst(members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A .tar.zst of exactly these members (PAX format, as the build writes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return zstandard.ZstdCompressor(level=3).compress(raw.getvalue())


def member(name: str, data: bytes = b"", **attributes: Any) -> tuple[tarfile.TarInfo, bytes | None]:
    """A tar member; `attributes` set TarInfo fields (type, linkname, mode, size, ...)."""
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.mode = 0o644
    info.size = len(data)
    for key, value in attributes.items():
        setattr(info, key, value)
    return info, (data if info.isreg() else None)


Member = tuple[tarfile.TarInfo, "bytes | None"]


def layer_members(root: Path, files: Sequence[FileEntry]) -> list[Member]:
    """The members the build would write for `files` (to extend with hostile ones)."""
    members = []
    for entry in files:
        if entry.link is not None:
            members.append(
                member(entry.path, type=tarfile.SYMTYPE, linkname=entry.link, mode=0o777)
            )
        else:
            members.append(member(entry.path, (root / entry.path).read_bytes()))
    return members


class ReleaseFactory:
    """Writes signed releases (archives, manifests, signatures, releases.json) into folders."""

    def __init__(self, scratch: Path, keys: Keys) -> None:
        self.scratch = scratch
        self.keys = keys
        self._count = 0

    def _stage(self, files: Files) -> Path:
        self._count += 1
        root = self.scratch / f"stage-{self._count}"
        for name, content in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Link):
                path.symlink_to(content.target)
            else:
                path.write_bytes(content)
        return root

    def layer(
        self,
        out_dir: Path,
        layer: str,
        spec: ReleaseSpec,
        files: Files,
        requires: RequiredLayer | None,
        overrides: Mapping[str, Any],
        writer: ArchiveWriter | None,
    ) -> tuple[LayerManifest, Path]:
        """Pack, describe and sign one layer; returns its manifest and manifest path."""
        root = self._stage(files)
        entries = layer_files(root)
        stem = f"{layer}-{spec.overlay_version}-{spec.platform}"
        archive_path = out_dir / f"{stem}.tar.zst"
        if writer is None:
            archive = write_layer_archive(root, entries, archive_path, level=3)
        else:
            data = writer(root, entries)
            archive_path.write_bytes(data)
            archive = ArchiveRef(
                name=archive_path.name, size=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
        manifest = LayerManifest(
            format=FORMAT,
            layer=layer,
            overlay_version=spec.overlay_version,
            serial=spec.serial,
            requires=requires,
            llama_cpp_version=spec.llama_cpp_version,
            python_tag="py3",
            platform=spec.platform,
            cuda_version=spec.cuda_version,
            min_driver={"linux": "580.65.06", "windows": "580.88"},
            cuda_archs=("75",),
            ptx_archs=("75",),
            min_vram_mb=1024,
            archive=archive,
            unpacked_size=sum(entry.size for entry in entries if entry.link is None),
            files=entries,
            created="2026-11-25T00:00:00Z",
        )
        manifest = manifest.model_copy(update=dict(overrides))
        manifest_path = out_dir / f"{stem}.json"
        data = dump_manifest(manifest)
        manifest_path.write_bytes(data)
        manifest_path.with_name(manifest_path.name + ".sig").write_bytes(
            sign(data, self.keys.private)
        )
        return manifest, manifest_path

    def release(self, out_dir: Path, spec: ReleaseSpec) -> list[Path]:
        """Both layers of `spec`; returns the manifest paths (runtime, llama)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        runtime, runtime_path = self.layer(
            out_dir,
            "cuda-runtime",
            spec,
            spec.runtime,
            None,
            spec.runtime_overrides,
            spec.runtime_archive,
        )
        requires = RequiredLayer(
            layer="cuda-runtime", id=layer_id(runtime), sha256=runtime.archive.sha256
        )
        llama = spec.llama if spec.llama is not None else llama_files(spec.overlay_version)
        _, llama_path = self.layer(
            out_dir, "llama-cuda", spec, llama, requires, spec.llama_overrides, spec.llama_archive
        )
        return [runtime_path, llama_path]

    def vulkan_release(self, out_dir: Path, spec: VulkanSpec) -> list[Path]:
        """The one llama-vulkan layer of `spec`; returns its manifest path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        root = self._stage({"backends/libggml-vulkan.so": spec.module, "licenses/LICENSE": b"MIT"})
        entries = layer_files(root)
        stem = f"llama-vulkan-{spec.overlay_version}-{spec.platform}"
        archive = write_layer_archive(root, entries, out_dir / f"{stem}.tar.zst", level=3)
        manifest = LayerManifest(
            format=FORMAT,
            layer="llama-vulkan",
            overlay_version=spec.overlay_version,
            serial=spec.serial,
            requires=None,
            llama_cpp_version=spec.llama_cpp_version,
            python_tag="py3",
            platform=spec.platform,
            min_vram_mb=spec.min_vram_mb,
            glibc_floor="2.31",
            vulkan_api=spec.vulkan_api,
            shader_features=("coopmat", "integer_dot"),
            archive=archive,
            unpacked_size=sum(entry.size for entry in entries if entry.link is None),
            files=entries,
            created="2026-12-07T00:00:00Z",
        )
        manifest_path = out_dir / f"{stem}.json"
        data = dump_manifest(manifest)
        manifest_path.write_bytes(data)
        manifest_path.with_name(manifest_path.name + ".sig").write_bytes(
            sign(data, self.keys.private)
        )
        return [manifest_path]

    def publish_releases(self, out_dir: Path, releases: Sequence[list[Path]], serial: int) -> Path:
        """A release folder over already written releases (CUDA or Vulkan); returns the index."""
        written = write_release_index(out_dir, releases, serial, self.keys.private, "")
        return written[-2]

    def publish(self, out_dir: Path, *specs: ReleaseSpec, serial: int | None = None) -> Path:
        """A release folder with every spec and a signed releases.json; returns the index."""
        entries = [self.release(out_dir, spec) for spec in specs]
        index_serial = serial if serial is not None else max(spec.serial for spec in specs)
        written = write_release_index(out_dir, entries, index_serial, self.keys.private, "")
        return written[-2]  # releases.json (beside overlays.json and both signatures)


def rewrite_index(index: Path, keys: Keys, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit a published releases.json (as JSON) and sign it again with `keys`."""
    document = json.loads(index.read_bytes())
    change(document)
    data = dump_index(parse_index(json.dumps(document).encode()))
    index.write_bytes(data)
    index.with_name(index.name + ".sig").write_bytes(sign(data, keys.private))


def rewrite_list(
    index: Path, keys: Keys, change: Callable[[dict[str, Any]], None], *, repin: bool = True
) -> None:
    """Edit the release list (overlays.json) beside `index`, sign it with `keys`, and (unless
    `repin` is false) pin the new bytes in releases.json, signed with `keys` too."""
    listing = index.with_name(OVERLAYS_NAME)
    document = json.loads(listing.read_bytes())
    change(document)
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    listing.write_bytes(data)
    listing.with_name(listing.name + ".sig").write_bytes(sign(data, keys.private))
    if repin:

        def pin(index_document: dict[str, Any]) -> None:
            index_document["overlays"].update(
                size=len(data), sha256=hashlib.sha256(data).hexdigest()
            )

        rewrite_index(index, keys, pin)


def published_entries(index: Path) -> tuple[ReleaseEntry, ...]:
    """The release entries this reader knows in the list beside `index`."""
    listing = parse_release_list(index.with_name(OVERLAYS_NAME).read_bytes())
    return known_entries(listing, str(index))[0]
