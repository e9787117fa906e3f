"""A GGUF file's metadata and tensor sizes, read without loading its arrays.

`gguf.GGUFReader` builds a numpy view for every element of every array: a 262k-token vocabulary
takes about a minute on a busy 2-core machine. The estimate needs scalars, array lengths and the
tensor table: this reader skips array contents (strings by their lengths) and takes the type
tables from the `gguf` package (`gguf.constants`).

The file is untrusted: every count and length it states is bounded (by a constant or by the
file's size) before anything is read or allocated by it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from llamaship.fit.errors import FitError

GGUF_MAGIC = b"GGUF"
# Arrays longer than this are skipped (their length kept): vocabularies, merges, scores.
_MAX_KEPT_ARRAY = 4096
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
# Bounds on what the file states: a string read (keys, names, chat templates), nesting of
# arrays, tensor dimensions (ggml's GGML_MAX_DIMS) and the smallest size of one record.
MAX_STRING_BYTES = 1 << 20
MAX_ARRAY_DEPTH = 3
MAX_DIMS = 4
_MIN_RECORD_BYTES = 8


@dataclass(frozen=True)
class Skipped:
    """An array not read: its element count only."""

    length: int


@dataclass(frozen=True)
class GgufMeta:
    """Key-value metadata and the size of each tensor, in file order."""

    fields: dict[str, Any]
    tensor_bytes: dict[str, int]


def _read(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise FitError("the GGUF file ends in the middle of its metadata: it is truncated")
    return data


def _unpack(file: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read(file, struct.calcsize(fmt)))[0]


def _string(file: BinaryIO) -> str:
    length = _unpack(file, "<Q")
    if length > MAX_STRING_BYTES:
        msg = f"the GGUF metadata holds a string of {length} bytes: the file is damaged"
        raise FitError(msg)
    return _read(file, length).decode("utf-8", "replace")


def _value(file: BinaryIO, kind: int, depth: int = 0) -> Any:
    if kind in _SCALARS:
        return _unpack(file, _SCALARS[kind])
    if kind == _STRING:
        return _string(file)
    if kind != _ARRAY:
        raise FitError(f"unknown GGUF value type {kind}: not a GGUF file this version reads")
    if depth >= MAX_ARRAY_DEPTH:
        raise FitError(f"the GGUF metadata nests arrays deeper than {MAX_ARRAY_DEPTH}: damaged")
    item_kind, length = _unpack(file, "<I"), _unpack(file, "<Q")
    if length <= _MAX_KEPT_ARRAY:
        return [_value(file, item_kind, depth + 1) for _ in range(length)]
    if item_kind in _SCALARS:
        file.seek(struct.calcsize(_SCALARS[item_kind]) * length, 1)
    elif item_kind == _STRING:
        for _ in range(length):
            file.seek(_unpack(file, "<Q"), 1)
    else:
        for _ in range(length):
            _value(file, item_kind, depth + 1)
    return Skipped(length)


def _count(file: BinaryIO, what: str, file_size: int) -> int:
    """A record count the file states, refused when the file is too small to hold it."""
    count = int(_unpack(file, "<Q"))
    if count > file_size // _MIN_RECORD_BYTES:
        msg = f"the GGUF header states {count} {what} in a file of {file_size} bytes: damaged"
        raise FitError(msg)
    return count


def read_meta(path: Path) -> GgufMeta:
    """Read the metadata and tensor table of the GGUF file `path`; `FitError` if unreadable."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        with path.open("rb") as file:
            if _read(file, 4) != GGUF_MAGIC:
                raise FitError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
            version = _unpack(file, "<I")
            if version < 2:
                raise FitError(f"{path} is GGUF version {version}: too old (2 or later needed)")
            file_size = os.fstat(file.fileno()).st_size
            n_tensors = _count(file, "tensors", file_size)
            n_fields = _count(file, "metadata fields", file_size)
            fields = {}
            for _ in range(n_fields):
                key = _string(file)
                fields[key] = _value(file, _unpack(file, "<I"))
            sizes = {}
            for _ in range(n_tensors):
                name = _string(file)
                n_dims = _unpack(file, "<I")
                if n_dims > MAX_DIMS:
                    raise FitError(f"the tensor {name!r} has {n_dims} dimensions: damaged")
                dims = [_unpack(file, "<Q") for _ in range(n_dims)]
                kind = GGMLQuantizationType(_unpack(file, "<I"))
                _unpack(file, "<Q")  # the data offset
                block, block_bytes = GGML_QUANT_SIZES[kind]
                elements = 1
                for dim in dims:
                    elements *= dim
                sizes[name] = elements // block * block_bytes
            if sum(sizes.values()) > file_size:
                msg = (
                    f"{path}: its tensors need {sum(sizes.values())} bytes but the file has "
                    f"{file_size}: it is truncated or damaged"
                )
                raise FitError(msg)
    except OSError as error:
        raise FitError(f"cannot read {path}: {error.strerror}") from None
    except (ValueError, KeyError) as error:
        raise FitError(
            f"{path} holds a tensor type this gguf package does not know: {error}"
        ) from None
    return GgufMeta(fields=fields, tensor_bytes=sizes)
