"""Write the signed release index (`releases.json` + `.sig`) that the runtime queries.

Its serial only grows: the runtime refuses an index older than the newest it accepted, so a new
index in a directory that already holds one must carry a higher serial. It expires
(`DEFAULT_LIFETIME` after it was written unless told otherwise): the runtime refuses an expired
index, so a release job must sign it again before then.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_contract.hashing import sha256_of
from llamaship_contract.names import INDEX_NAME, SIGNATURE_SUFFIX
from llamaship_contract.overlay import (
    FORMAT,
    LAYER_NAMES,
    LayerManifest,
    LayerRef,
    ManifestError,
    ReleaseEntry,
    ReleaseIndex,
    dump_index,
    layer_id,
    parse_index,
    parse_manifest,
)
from llamaship_contract.signing import sign

DEFAULT_LIFETIME = timedelta(days=30)


def _url(base_url: str, name: str) -> str:
    """`name` under `base_url`, or relative to the index when no base URL is given."""
    return f"{base_url.rstrip('/')}/{name}" if base_url else name


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
    if sorted(manifests) != sorted(LAYER_NAMES):
        msg = (
            f"a release needs one manifest per layer ({', '.join(LAYER_NAMES)}); "
            f"got {', '.join(sorted(manifests)) or 'none'}"
        )
        raise BuildError(msg)
    llama = manifests["llama-cuda"][1]
    runtime = manifests["cuda-runtime"][1]
    if llama.requires is None or llama.requires.id != layer_id(runtime):
        msg = (
            f"{manifests['llama-cuda'][0]} requires {llama.requires} but the release's "
            f"cuda-runtime layer is {layer_id(runtime)}: build both layers together"
        )
        raise BuildError(msg)
    for path, manifest in manifests.values():
        if (manifest.overlay_version, manifest.serial) != (llama.overlay_version, llama.serial):
            msg = f"{path} belongs to another release than {manifests['llama-cuda'][0]}"
            raise BuildError(msg)
    layers = tuple(
        LayerRef(
            layer=manifest.layer,
            id=layer_id(manifest),
            manifest=_url(base_url, path.name),
            manifest_sha256=sha256_of(path),
            archive=_url(base_url, manifest.archive.name),
        )
        for _, (path, manifest) in sorted(manifests.items())
    )
    return ReleaseEntry(
        overlay_version=llama.overlay_version,
        serial=llama.serial,
        platform=llama.platform,
        python_tag=llama.python_tag,
        llama_cpp_version=llama.llama_cpp_version,
        cuda_version=llama.cuda_version,
        min_driver=llama.min_driver,
        cuda_archs=llama.cuda_archs,
        ptx_archs=llama.ptx_archs,
        min_vram_mb=llama.min_vram_mb,
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


def write_release_index(
    out_dir: Path,
    entries: Sequence[Sequence[Path]],
    serial: int,
    signing_key_b64: str,
    base_url: str,
    created: datetime | None = None,
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> list[Path]:
    """Write `releases.json` and its signature into `out_dir`; returns both paths.

    `entries`: per release, the manifest files of its layers (as `build_overlay` wrote them).
    `base_url`: where the files will be published ("" writes URLs relative to the index).
    `lifetime`: how long after `created` the index expires.
    """
    if lifetime <= timedelta(0):
        msg = f"the release index lifetime must be positive (got {lifetime})"
        raise BuildError(msg)
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
    index = ReleaseIndex(
        format=FORMAT,
        serial=serial,
        created=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        expires=(moment + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ"),
        overlays=tuple(_release_entry(paths, base_url) for paths in entries),
    )
    data = dump_index(index)
    try:
        parse_index(data, origin="the release index being written")
    except ManifestError as error:
        msg = f"{error} (check the serial and the manifests passed in)"
        raise BuildError(msg) from None
    signature_path = out_dir / f"{INDEX_NAME}{SIGNATURE_SUFFIX}"
    for path, content in ((index_path, data), (signature_path, sign(data, signing_key_b64))):
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(content)
        os.replace(partial, path)
    return [index_path, signature_path]
