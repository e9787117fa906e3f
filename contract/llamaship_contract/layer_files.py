"""What a layer manifest says about the layer's files: its archive, each file, and the checks
between them (roots, duplicates, links, sizes).

A `files` entry may be a symbolic link inside the layer (`"link": "<relative target>"`): its
`size` and `sha256` are those of the target, which must be a regular file listed in the same
manifest. `unpacked_size` is the sum of the regular files' sizes.
"""

from __future__ import annotations

import posixpath

from pydantic import Field, field_validator

from llamaship_contract.document import StrictDocument
from llamaship_contract.names import ARCHIVE_SUFFIX
from llamaship_contract.overlay_fields import Count, Sha256, safe_relative_path


class ArchiveRef(StrictDocument):
    """The compressed layer archive a manifest describes."""

    name: str
    size: int = Field(ge=1)
    sha256: Sha256

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if safe_relative_path(name) or "/" in name or not name.endswith(ARCHIVE_SUFFIX):
            msg = f"must be a plain file name ending in {ARCHIVE_SUFFIX}"
            raise ValueError(msg)
        return name


class FileEntry(StrictDocument):
    """One file of an unpacked layer; `link` is set for a symlink (relative target)."""

    path: str
    size: Count
    sha256: Sha256
    link: str | None = Field(default=None, min_length=1, exclude_if=lambda link: link is None)

    @field_validator("path")
    @classmethod
    def _safe(cls, path: str) -> str:
        unsafe = safe_relative_path(path)
        if unsafe:
            msg = f"{path[:80]!r} {unsafe}: it must stay inside the layer"
            raise ValueError(msg)
        return path


def file_problems(
    files: tuple[FileEntry, ...], unpacked_size: int, roots: tuple[str, ...]
) -> list[str]:
    """Every problem of a manifest's `files` against its `unpacked_size` and layer roots."""
    problems: list[str] = []
    by_path: dict[str, FileEntry] = {}
    for position, entry in enumerate(files):
        if entry.path.split("/")[0] not in roots:
            problems.append(
                f"files[{position}].path: {entry.path!r} is outside the layer's "
                f"top-level directories ({', '.join(roots)})"
            )
        if entry.path in by_path:
            problems.append(f"files: lists {entry.path!r} twice")
        by_path[entry.path] = entry
    for entry in files:
        parents = entry.path.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in by_path:
                problems.append(
                    f"files: {entry.path!r} lies under {'/'.join(parents[:depth])!r}"
                    ", which is listed as a file"
                )
                break
    for entry in files:
        if entry.link is None:
            continue
        target_path = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.link))
        target = by_path.get(target_path)
        if entry.link.startswith("/") or safe_relative_path(target_path) or target is None:
            problems.append(
                f"files: link {entry.path!r} -> {entry.link!r} must point to a "
                "regular file listed in the same layer"
            )
        elif target.link is not None:
            problems.append(f"files: link {entry.path!r} points to another link")
        elif (target.size, target.sha256) != (entry.size, entry.sha256):
            problems.append(f"files: link {entry.path!r} must repeat its target's size and sha256")
    if not files:
        problems.append("files: must list at least one file")
    regular_bytes = sum(entry.size for entry in files if entry.link is None)
    if files and regular_bytes != unpacked_size:
        problems.append(
            f"unpacked_size: is {unpacked_size} but the regular files add up to {regular_bytes}"
        )
    return problems
