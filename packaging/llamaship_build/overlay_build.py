"""Build the signed two-layer CUDA overlay from a CUDA backend module (Linux).

The module (`libggml-cuda.so`) must come from the same sdist and portable flags as the bundle:
the bundle's own ggml loads it. Output in `out_dir`, per layer:
`<layer>-<overlay version>-<platform>.tar.zst`, its manifest `<same>.json` and the manifest's
signature `<same>.json.sig`. The cuda-runtime layer is built first: the llama-cuda manifest
`requires` its exact id and sha256.

A release may offer one overlay per GPU architecture family (`overlay_release`): each family's
llama-cuda layer is its own compile, while the CUDA runtime is the same bytes for all. The
first family packs the runtime archive (named after the release, not the family); the others
get a runtime manifest of their own that names that same archive (`shared_runtime`), so the
release carries and compresses the 420 MB runtime once.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from llamaship_build.cuda_layer import runtime_needs, stage_cuda_layer
from llamaship_build.elf import Patchelf, find_patchelf
from llamaship_build.errors import BuildError
from llamaship_build.fatbin import compiled_archs
from llamaship_build.glibc import GLIBC, GLIBCXX, glibc_floors
from llamaship_build.imports_check import check_imports
from llamaship_build.overlay_archive import DEFAULT_LEVEL, layer_files, write_layer_archive
from llamaship_build.overlay_layers import stage_runtime_layer
from llamaship_contract.hashing import sha256_of
from llamaship_contract.layer_files import ArchiveRef, FileEntry
from llamaship_contract.names import SIGNATURE_SUFFIX
from llamaship_contract.overlay import (
    FORMAT,
    LayerManifest,
    LayerName,
    RequiredLayer,
    dump_manifest,
    layer_id,
    parse_manifest,
)
from llamaship_contract.overlay_fields import ManifestError
from llamaship_contract.signing import public_key_of, sign

_log = logging.getLogger(__name__)

RUNTIME_PACKAGES = ("nvidia-cuda-runtime", "nvidia-cublas")
# The layers hold no Python code: any CPython the bundle runs.
PYTHON_TAG = "py3"
_MB = 1_000_000


def manifest_timestamp(created: datetime | None) -> str:
    """`created`, else SOURCE_DATE_EPOCH (reproducible builds: `nox -s repro`), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    moment = created or (
        datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else datetime.now(UTC)
    )
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class OverlayTarget:
    """What a release promises in both manifests: version, serial, the bundle it is for
    (llama-cpp-python version, platform) and GPU requirements."""

    overlay_version: str
    serial: int
    llama_cpp_version: str
    platform: str
    cuda_version: str
    min_driver: Mapping[str, str]
    cuda_archs: tuple[str, ...]
    ptx_archs: tuple[str, ...]
    min_vram_mb: int


def _manifest(
    layer: LayerName,
    requires: RequiredLayer | None,
    archive: ArchiveRef,
    files: tuple[FileEntry, ...],
    created: str,
    target: OverlayTarget,
    floors: tuple[str | None, str | None],
) -> LayerManifest:
    return LayerManifest(
        format=FORMAT,
        layer=layer,
        overlay_version=target.overlay_version,
        serial=target.serial,
        requires=requires,
        llama_cpp_version=target.llama_cpp_version,
        python_tag=PYTHON_TAG,
        platform=target.platform,
        cuda_version=target.cuda_version,
        min_driver=dict(target.min_driver),
        cuda_archs=target.cuda_archs,
        ptx_archs=target.ptx_archs,
        min_vram_mb=target.min_vram_mb,
        glibc_floor=floors[0],
        glibcxx_floor=floors[1],
        archive=archive,
        unpacked_size=sum(entry.size for entry in files if entry.link is None),
        files=files,
        created=created,
    )


def layer_floors(root: Path) -> tuple[str | None, str | None]:
    """The glibc and GLIBCXX versions the layer's ELF files need (None: no such need)."""
    glibc, glibcxx = glibc_floors(root, (GLIBC, GLIBCXX))
    return (
        glibc.text() if glibc.needed_by else None,
        glibcxx.text() if glibcxx.needed_by else None,
    )


def _checked(manifest: LayerManifest) -> bytes:
    """The canonical manifest bytes, after the runtime's own validation accepted them."""
    data = dump_manifest(manifest)
    try:
        parse_manifest(data, origin=f"the {manifest.layer} manifest being built")
    except ManifestError as error:
        msg = f"{error} (check the overlay options passed to the build)"
        raise BuildError(msg) from None
    return data


def write_manifest(manifest: LayerManifest, stem: Path, signing_key_b64: str | None) -> list[Path]:
    """Write `<stem>.json` (checked, canonical) and, given a key, its signature `.json.sig`."""
    manifest_path = stem.with_name(f"{stem.name}.json")
    data = _checked(manifest)
    manifest_path.write_bytes(data)
    written = [manifest_path]
    if signing_key_b64 is not None:  # unsigned: the release's signing step signs it later
        signature_path = manifest_path.with_name(manifest_path.name + SIGNATURE_SUFFIX)
        signature_path.write_bytes(sign(data, signing_key_b64))
        written.append(signature_path)
    return written


def _pack_layer(
    layer: LayerName,
    root: Path,
    out_dir: Path,
    level: int,
    requires: RequiredLayer | None,
    created: str,
    target: OverlayTarget,
    signing_key_b64: str | None,
    archive_version: str | None = None,
) -> tuple[LayerManifest, list[Path]]:
    stem = f"{layer}-{target.overlay_version}-{target.platform}"
    archive_stem = f"{layer}-{archive_version or target.overlay_version}-{target.platform}"
    files = layer_files(root)
    archive = write_layer_archive(root, files, out_dir / f"{archive_stem}.tar.zst", level)
    manifest = _manifest(layer, requires, archive, files, created, target, layer_floors(root))
    written = [out_dir / archive.name, *write_manifest(manifest, out_dir / stem, signing_key_b64)]
    _log.info(
        "layer %s (%s): %d files, %.1f MB raw -> %.1f MB %s (zstd %d); glibc %s, GLIBCXX %s",
        layer,
        layer_id(manifest),
        len(files),
        manifest.unpacked_size / _MB,
        archive.size / _MB,
        archive.name,
        level,
        manifest.glibc_floor or "-",
        manifest.glibcxx_floor or "-",
    )
    return manifest, written


def _reuse_runtime(
    shared: LayerManifest,
    wanted: Sequence[str],
    out_dir: Path,
    created: str,
    target: OverlayTarget,
    signing_key_b64: str | None,
) -> tuple[LayerManifest, list[Path]]:
    """This overlay's cuda-runtime manifest for the archive another family's build packed."""
    shipped = {PurePosixPath(entry.path).name for entry in shared.files}
    missing = sorted(set(wanted) - shipped)
    if missing:
        msg = (
            f"this module links {', '.join(missing)}, which the shared CUDA runtime layer "
            f"{shared.archive.name} does not ship: build the families from one toolchain"
        )
        raise BuildError(msg)
    if not (out_dir / shared.archive.name).is_file():
        msg = f"the shared CUDA runtime archive {shared.archive.name} is not in {out_dir}"
        raise BuildError(msg)
    floors = (shared.glibc_floor, shared.glibcxx_floor)
    manifest = _manifest(
        "cuda-runtime", None, shared.archive, shared.files, created, target, floors
    )
    stem = out_dir / f"cuda-runtime-{target.overlay_version}-{target.platform}"
    return manifest, write_manifest(manifest, stem, signing_key_b64)


def build_overlay(
    module: Path,
    out_dir: Path,
    *,
    llama_cpp_version: str,
    cuda_version: str,
    min_driver: Mapping[str, str],
    min_vram_mb: int,
    serial: int,
    overlay_version: str,
    signing_key_b64: str | None,
    runtime_wheels: Sequence[Path],
    runtime_libraries: Sequence[str] | None = None,
    platform: str = "linux_x86_64",
    compression_level: int = DEFAULT_LEVEL,
    created: datetime | None = None,
    patchelf: Patchelf | None = None,
    release_version: str | None = None,
    shared_runtime: LayerManifest | None = None,
) -> list[Path]:
    """Build, sign and write both layers; returns [archive, manifest, signature] per layer
    (no archive for a `shared_runtime`: the cuda-runtime manifest names that one's).

    `release_version` names the cuda-runtime archive (default: `overlay_version`), so every
    architecture family of a release shares it; `shared_runtime` is the cuda-runtime manifest
    an earlier family of this build wrote in `out_dir`, whose archive this one reuses.

    `module` is the CUDA backend module (`libggml-cuda.so`) of llama-cpp-python
    `llama_cpp_version`, the bundle's pinned version. `signing_key_b64=None` leaves the
    manifests unsigned (no `.sig`): the release workflow builds without the key and signs in
    the one step that sees it (`release_sign`).

    The signed `cuda_archs` / `ptx_archs` are read from the staged module's device code
    (`fatbin.compiled_archs`), never taken from options.
    `runtime_libraries`: the CUDA libraries to ship (plus what they need in turn); by default
    whatever the module links and the system, the driver and the bundle do not provide. Tests
    pass only `libcudart.so.13` to avoid the 444 MB cuBLAS wheel.
    """
    if signing_key_b64 is not None:
        public_key_of(signing_key_b64)  # a bad key fails now, not after minutes of compression
    if not platform.startswith("linux_"):
        msg = f"the CUDA overlay is built for Linux (ELF, patchelf) only, not {platform}"
        raise BuildError(msg)
    tool = patchelf or Patchelf(find_patchelf())
    created_text = manifest_timestamp(created)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out_dir) as staging_text:
        staging = Path(staging_text)
        llama_root = staging / "llama-cuda"
        staged, info = stage_cuda_layer(module, llama_root, tool)
        archs = compiled_archs([staged])
        target = OverlayTarget(
            overlay_version=overlay_version,
            serial=serial,
            llama_cpp_version=llama_cpp_version,
            platform=platform,
            cuda_version=cuda_version,
            min_driver=dict(min_driver),
            cuda_archs=archs.sass,
            ptx_archs=archs.ptx,
            min_vram_mb=min_vram_mb,
        )
        wanted = tuple(runtime_libraries) if runtime_libraries is not None else runtime_needs(info)
        if shared_runtime is not None:
            runtime, written = _reuse_runtime(
                shared_runtime, wanted, out_dir, created_text, target, signing_key_b64
            )
        else:
            runtime_root = staging / "cuda-runtime"
            stage_runtime_layer(runtime_wheels, wanted, runtime_root, tool)
            check_imports(runtime_root, "linux")
            runtime, written = _pack_layer(
                "cuda-runtime",
                runtime_root,
                out_dir,
                compression_level,
                None,
                created_text,
                target,
                signing_key_b64,
                archive_version=release_version,
            )
        requires = RequiredLayer(
            layer="cuda-runtime", id=layer_id(runtime), sha256=runtime.archive.sha256
        )
        _, llama_written = _pack_layer(
            "llama-cuda",
            llama_root,
            out_dir,
            compression_level,
            requires,
            created_text,
            target,
            signing_key_b64,
        )
    return written + llama_written


# A pip-compile pin: name==version, an optional environment marker, then its hash lines.
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;\\]+)(?:\s*;[^\\\n]*)?"
    r"(?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})+",
    re.MULTILINE,
)
_PIN_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(lock_file: Path, packages: Sequence[str] = RUNTIME_PACKAGES) -> str:
    """The hashed pins of `packages` from a lock file, as a requirements text."""
    pins = {
        _normalized(match.group("name")): match.group(0)
        for match in _PIN.finditer(lock_file.read_text(encoding="utf-8"))
    }
    missing = [name for name in packages if _normalized(name) not in pins]
    if missing:
        msg = (
            f"{lock_file} has no hashed pin of {', '.join(missing)}: add them to "
            "requirements/gpu.in and run `nox -s lock`"
        )
        raise BuildError(msg)
    return "".join(pins[_normalized(name)] + "\n" for name in packages)


def download_runtime_wheels(
    lock_file: Path, dest: Path, packages: Sequence[str] = RUNTIME_PACKAGES
) -> list[Path]:
    """Download the pinned `nvidia-*` wheels (hash-checked) into `dest`; pip reuses files
    already there after checking their hashes. Returns the wheel paths, one per package."""
    dest.mkdir(parents=True, exist_ok=True)
    pinned = runtime_requirements(lock_file, packages)
    with tempfile.TemporaryDirectory(prefix="llamaship-runtime-") as scratch:
        requirements = Path(scratch) / "runtime.txt"
        requirements.write_text(pinned, encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
            "-d",
            str(dest),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = (
            f"downloading the CUDA runtime wheels failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}"
        )
        raise BuildError(msg)
    wheels: list[Path] = []
    for match in _PIN.finditer(pinned):
        stem = f"{_normalized(match.group('name')).replace('-', '_')}-{match.group('version')}-"
        wheels.append(hash_checked_file(dest, f"{stem}*.whl", _PIN_HASH.findall(match.group(0))))
    return wheels


def hash_checked_file(directory: Path, pattern: str, hashes: Sequence[str]) -> Path:
    """The one file in `directory` matching `pattern` whose sha256 the lock allows: the file
    pip hash-checked, never a same-named leftover (another platform's wheel, a stale copy)."""
    allowed = set(hashes)
    found = [path for path in sorted(directory.glob(pattern)) if sha256_of(path) in allowed]
    if len(found) != 1:
        named = ", ".join(path.name for path in found) or "none"
        msg = (
            f"expected one {pattern} in {directory} with a hash the lock allows, found "
            f"{named}: remove the extra files and run again"
        )
        raise BuildError(msg)
    return found[0]
