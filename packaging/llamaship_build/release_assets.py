"""Release assets: the bundle's files under names unique per OS, and one SHA256SUMS over all.

Every OS's bundle build writes `dist/bundle-manifest.json`; as a release asset it becomes
`backend-<version>-<os>-<machine>-cpu.manifest.json`, beside the archive (whose name already
carries the platform tag, `platforms.TargetPlatform.tag`) and its `.sha256`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_contract.bundle import BundleManifest
from llamaship_contract.document import parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.hashing import sha256_of
from llamaship_contract.names import BUNDLE_MANIFEST_NAME

SUMS_NAME = "SHA256SUMS"


def manifest_asset_name(archive_name: str) -> str:
    """`backend-1.0-linux-x86_64-cpu.tar.zst` -> `backend-1.0-linux-x86_64-cpu.manifest.json`."""
    for suffix in (".tar.zst", ".tar.xz", ".tar.gz", ".zip"):
        if archive_name.endswith(suffix):
            return f"{archive_name[: -len(suffix)]}.manifest.json"
    msg = f"{archive_name} is not a bundle archive name (.tar.zst, .tar.xz or .zip)"
    raise BuildError(msg)


def collect_bundle_assets(dist: Path, out_dir: Path) -> list[Path]:
    """Copy the built bundle's archive, its .sha256 and its manifest into `out_dir`."""
    manifest_path = dist / BUNDLE_MANIFEST_NAME
    try:
        manifest = parse_document(BundleManifest, manifest_path.read_bytes(), str(manifest_path))
    except OSError as error:
        msg = f"cannot read {manifest_path} ({error.strerror}): build the bundle first"
        raise BuildError(msg) from None
    except ContractError as error:
        msg = f"{error}; rebuild the bundle (`nox -s bundle -- --force`)"
        raise BuildError(msg) from None
    archive = dist / manifest.archive.name
    if not archive.is_file() or sha256_of(archive) != manifest.archive.sha256:
        msg = f"{archive} is missing or does not match {manifest_path}: rebuild the bundle"
        raise BuildError(msg)
    out_dir.mkdir(parents=True, exist_ok=True)
    copies = [
        (archive, archive.name),
        (dist / f"{archive.name}.sha256", f"{archive.name}.sha256"),
        (manifest_path, manifest_asset_name(archive.name)),
    ]
    written = []
    for source, name in copies:
        shutil.copyfile(source, out_dir / name)
        written.append(out_dir / name)
    return written


def sums_text(files: Iterable[Path]) -> str:
    """`sha256sum`'s format (`<hex>  <name>`), sorted by name; names must be unique."""
    by_name: dict[str, Path] = {}
    for path in files:
        if path.name in by_name:
            msg = (
                f"two release assets are named {path.name} ({by_name[path.name]}, {path}): "
                "every asset needs a name unique across operating systems"
            )
            raise BuildError(msg)
        by_name[path.name] = path
    return "".join(f"{sha256_of(by_name[name])}  {name}\n" for name in sorted(by_name))


def write_sums(directory: Path) -> Path:
    """Write `directory/SHA256SUMS` over every other file in `directory` (not recursive)."""
    files = [path for path in directory.iterdir() if path.is_file() and path.name != SUMS_NAME]
    if not files:
        msg = f"{directory} holds no release assets to checksum"
        raise BuildError(msg)
    target = directory / SUMS_NAME
    target.write_text(sums_text(files), encoding="utf-8")
    return target
