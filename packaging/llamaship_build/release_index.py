"""Write the signed release index that the runtime queries: `overlays.json` (the releases,
release key) and `releases.json` (the entry point: serial, expiry, and the list's hash).

Its serial only grows: the runtime refuses an index older than the newest it accepted, so a new
index in a directory that already holds one must carry a higher serial. It expires
(`DEFAULT_LIFETIME` after it was written unless told otherwise): the runtime refuses an expired
index, so the scheduled job re-signs `releases.json` with the index key before then.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.glibc import parse_version
from llamaship_contract.document import dump_document
from llamaship_contract.hashing import sha256_of
from llamaship_contract.names import INDEX_NAME, SIGNATURE_SUFFIX
from llamaship_contract.overlay import KIND_LAYERS, REQUIRED_LAYER, LayerManifest, parse_manifest
from llamaship_contract.overlay_fields import ManifestError
from llamaship_contract.release_index import (
    FORMAT,
    OVERLAYS_NAME,
    LayerRef,
    PinnedList,
    ReleaseEntry,
    ReleaseIndex,
    ReleaseList,
    dump_index,
    known_entries,
    parse_index,
    parse_release_list,
)
from llamaship_contract.signing import sign

DEFAULT_LIFETIME = timedelta(days=30)
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def _url(base_url: str, name: str) -> str:
    """`name` under `base_url`, or relative to the index when no base URL is given."""
    return f"{base_url.rstrip('/')}/{name}" if base_url else name


def _highest(floors: Iterable[str | None]) -> str | None:
    """The highest of the layers' floors: what the release needs (None when none states one)."""
    known = [floor for floor in floors if floor is not None]
    return max(known, key=parse_version) if known else None


def _release_entry(manifest_paths: Sequence[Path], base_url: str) -> ReleaseEntry:
    manifests: dict[str, tuple[Path, LayerManifest]] = {}
    for path in manifest_paths:
        manifest = parse_manifest(path.read_bytes(), origin=str(path))
        if manifest.layer in manifests:
            msg = (
                f"two {manifest.layer} manifests for one release: "
                f"{manifests[manifest.layer][0]}, {path}"
            )
            raise BuildError(msg)
        manifests[manifest.layer] = (path, manifest)
    kinds = {manifest.kind for _, manifest in manifests.values()}
    wanted = KIND_LAYERS[next(iter(kinds))] if len(kinds) == 1 else ()
    if sorted(manifests) != sorted(wanted):
        kinds_text = "; ".join(
            f"{kind}: {' + '.join(layers)}" for kind, layers in KIND_LAYERS.items()
        )
        msg = (
            f"a release needs one manifest per layer of its kind ({kinds_text}); "
            f"got {', '.join(sorted(manifests)) or 'none'}"
        )
        raise BuildError(msg)
    main_path, main = manifests[wanted[-1]]  # the llama layer: it states the release's needs
    for name, (path, manifest) in manifests.items():
        needed = REQUIRED_LAYER[name]
        if needed is not None and (
            manifest.requires is None or manifest.requires.id != manifests[needed][1].id
        ):
            msg = (
                f"{path} requires {manifest.requires} but the release's {needed} layer is "
                f"{manifests[needed][1].id}: build the layers together"
            )
            raise BuildError(msg)
        if (manifest.overlay_version, manifest.serial) != (main.overlay_version, main.serial):
            msg = f"{path} belongs to another release than {main_path}"
            raise BuildError(msg)
    layers = tuple(
        LayerRef(
            layer=manifest.layer,
            id=manifest.id,
            manifest=_url(base_url, path.name),
            manifest_sha256=sha256_of(path),
            archive=_url(base_url, manifest.archive.name),
        )
        for _, (path, manifest) in sorted(manifests.items())
    )
    return ReleaseEntry(
        kind=main.kind,
        overlay_version=main.overlay_version,
        serial=main.serial,
        platform=main.platform,
        python_tag=main.python_tag,
        llama_cpp_version=main.llama_cpp_version,
        min_vram_mb=main.min_vram_mb,
        glibc_floor=_highest(manifest.glibc_floor for _, manifest in manifests.values()),
        glibcxx_floor=_highest(manifest.glibcxx_floor for _, manifest in manifests.values()),
        cuda_version=main.cuda_version,
        min_driver=dict(main.min_driver),
        cuda_archs=main.cuda_archs,
        ptx_archs=main.ptx_archs,
        vulkan_api=main.vulkan_api,
        shader_features=main.shader_features,
        layers=layers,
    )


def _previous_serial(index_path: Path) -> int | None:
    if not index_path.exists():
        return None
    try:
        return parse_index(index_path.read_bytes(), origin=str(index_path)).serial
    except ManifestError as error:
        msg = f"{error}; remove or fix the previous index before writing a new one"
        raise BuildError(msg) from None


def write_signed(path: Path, content: bytes, signing_key_b64: str) -> list[Path]:
    """Write `content` to `path` and its signature beside it, each through a rename."""
    signature_path = path.with_name(path.name + SIGNATURE_SUFFIX)
    for target, payload in ((path, content), (signature_path, sign(content, signing_key_b64))):
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(payload)
        os.replace(partial, target)
    return [path, signature_path]


def index_over(
    list_name: str,
    list_bytes: bytes,
    serial: int,
    list_serial: int,
    created: datetime,
    lifetime: timedelta,
) -> ReleaseIndex:
    """A `releases.json` pinning the release list `list_bytes` (published as `list_name`
    beside it), fresh from `created` for `lifetime`."""
    if lifetime <= timedelta(0):
        msg = f"the release index lifetime must be positive (got {lifetime})"
        raise BuildError(msg)
    moment = created.astimezone(UTC)
    return ReleaseIndex(
        format=FORMAT,
        serial=serial,
        created=moment.strftime(_STAMP),
        expires=(moment + lifetime).strftime(_STAMP),
        overlays=PinnedList(
            name=list_name,
            size=len(list_bytes),
            sha256=hashlib.sha256(list_bytes).hexdigest(),
            serial=list_serial,
        ),
    )


def write_release_index(
    out_dir: Path,
    entries: Sequence[Sequence[Path]],
    serial: int,
    signing_key_b64: str,
    base_url: str,
    created: datetime | None = None,
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> list[Path]:
    """Write `overlays.json`, `releases.json` and their signatures into `out_dir`.

    `entries`: per release, the manifest files of its layers (as the overlay build wrote them).
    `base_url`: where the files will be published ("" writes URLs relative to the index).
    `lifetime`: how long after `created` the index expires.
    """
    index_path = out_dir / INDEX_NAME
    previous = _previous_serial(index_path)
    if previous is not None and serial <= previous:
        msg = (
            f"release index serial {serial} is not greater than {previous} of the existing "
            f"{index_path}: serials only grow (the runtime refuses older indexes); "
            f"use {previous + 1} or more"
        )
        raise BuildError(msg)
    moment = (created or datetime.now(UTC)).astimezone(UTC)
    release_list = ReleaseList(
        format=FORMAT,
        serial=serial,
        created=moment.strftime(_STAMP),
        overlays=tuple(
            json.loads(dump_document(_release_entry(paths, base_url))) for paths in entries
        ),
    )
    list_bytes = dump_index(release_list)
    try:
        _, skipped = known_entries(parse_release_list(list_bytes), "the release list")
    except ManifestError as error:
        msg = f"{error} (check the serial and the manifests passed in)"
        raise BuildError(msg) from None
    if skipped:
        msg = f"the release list being written is not readable by this llamaship: {skipped[0]}"
        raise BuildError(msg)
    written = write_signed(out_dir / OVERLAYS_NAME, list_bytes, signing_key_b64)
    index = index_over(OVERLAYS_NAME, list_bytes, serial, serial, moment, lifetime)
    return written + write_signed(index_path, dump_index(index), signing_key_b64)
