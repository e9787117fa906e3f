"""Layer manifests and the release index: validation collects every problem, dumps are canonical."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest

from llamaship_contract.overlay import (
    OverlayRequirements,
    dump_manifest,
    layer_id,
    parse_manifest,
    requirements_for,
)
from llamaship_contract.overlay_fields import ManifestError
from llamaship_contract.release_index import (
    dump_index,
    known_entries,
    parse_index,
    parse_release_list,
)

RUNTIME_SHA = hashlib.sha256(b"runtime archive").hexdigest()
ARCHIVE_SHA = hashlib.sha256(b"llama archive").hexdigest()
LIB_SHA = hashlib.sha256(b"libggml").hexdigest()
PY_SHA = hashlib.sha256(b"__init__").hexdigest()


def manifest_doc() -> dict[str, Any]:
    """A valid llama-cuda manifest, as the contract shows it."""
    return {
        "format": 2,
        "layer": "llama-cuda",
        "overlay_version": "0.3.36-cu13.0-1",
        "serial": 7,
        "requires": {
            "layer": "cuda-runtime",
            "id": f"cuda-runtime-{RUNTIME_SHA[:16]}",
            "sha256": RUNTIME_SHA,
        },
        "llama_cpp_version": "0.3.36",
        "python_tag": "py3",
        "platform": "linux_x86_64",
        "cuda_version": "13.0",
        "min_driver": {"linux": "580.65.06", "windows": "580.88"},
        "cuda_archs": ["75"],
        "ptx_archs": [],
        "min_vram_mb": 1024,
        "archive": {
            "name": "llama-cuda-0.3.36-cu13.0-1-linux_x86_64.tar.zst",
            "size": 4096,
            "sha256": ARCHIVE_SHA,
        },
        "unpacked_size": 1070,
        "files": [
            {"path": "backends/__init__.py", "size": 70, "sha256": PY_SHA},
            {
                "path": "backends/lib/libggml.so",
                "size": 1000,
                "sha256": LIB_SHA,
                "link": "libggml.so.0",
            },
            {"path": "backends/lib/libggml.so.0", "size": 1000, "sha256": LIB_SHA},
        ],
        "created": "2026-11-25T00:00:00Z",
    }


def releases_doc() -> dict[str, Any]:
    """A valid releases.json: freshness, and the release list it pins."""
    return {
        "format": 2,
        "serial": 9,
        "created": "2026-11-25T00:00:00Z",
        "expires": "2026-12-25T00:00:00Z",
        "overlays": {"name": "overlays.json", "size": 900, "sha256": LIB_SHA, "serial": 9},
    }


def index_doc() -> dict[str, Any]:
    """A valid release list (overlays.json) with one cuda release."""
    return {
        "format": 2,
        "serial": 9,
        "created": "2026-11-25T00:00:00Z",
        "overlays": [
            {
                "kind": "cuda",
                "overlay_version": "0.3.36-cu13.0-1",
                "serial": 7,
                "platform": "linux_x86_64",
                "python_tag": "py3",
                "llama_cpp_version": "0.3.36",
                "cuda_version": "13.0",
                "min_driver": {"linux": "580.65.06", "windows": "580.88"},
                "cuda_archs": ["75"],
                "ptx_archs": [],
                "min_vram_mb": 1024,
                "layers": [
                    {
                        "layer": "cuda-runtime",
                        "id": f"cuda-runtime-{RUNTIME_SHA[:16]}",
                        "manifest": "cuda-runtime.json",
                        "manifest_sha256": RUNTIME_SHA,
                        "archive": "https://example.invalid/cuda-runtime.tar.zst",
                    },
                    {
                        "layer": "llama-cuda",
                        "id": f"llama-cuda-{ARCHIVE_SHA[:16]}",
                        "manifest": "llama-cuda.json",
                        "manifest_sha256": ARCHIVE_SHA,
                        "archive": "llama-cuda.tar.zst",
                    },
                ],
            }
        ],
    }


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def problems_of(document: Any) -> str:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(encode(document))
    return str(raised.value)


def test_valid_manifest_parses_and_dumps_canonically() -> None:
    manifest = parse_manifest(encode(manifest_doc()))
    assert manifest.layer == "llama-cuda"
    assert manifest.requires is not None and manifest.requires.sha256 == RUNTIME_SHA
    assert manifest.files[1].link == "libggml.so.0"
    data = dump_manifest(manifest)
    assert data == json.dumps(manifest_doc(), sort_keys=True, separators=(",", ":")).encode()
    assert parse_manifest(data) == manifest
    assert layer_id(manifest) == f"llama-cuda-{ARCHIVE_SHA[:16]}"


def test_all_problems_are_reported_at_once() -> None:
    document = manifest_doc()
    document["serial"] = -1
    document["cuda_version"] = "thirteen"
    document["archive"]["sha256"] = "ABC"
    document["files"][0]["path"] = "../escape.py"
    del document["min_vram_mb"]
    message = problems_of(document)
    for field in ("serial", "cuda_version", "archive.sha256", "files[0].path", "min_vram_mb"):
        assert field in message
    assert "5 problem(s)" in message


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "/etc/passwd",
        "backends/../../x",
        "C:/x",
        "backends\\lib\\x.dll",
        "backends//x",
        "backends/./x",
        "",
        "other/x.py",
        "lib/libcudart.so.13",
    ],
)
def test_unsafe_or_foreign_file_paths_are_refused(path: str) -> None:
    document = manifest_doc()
    document["files"][0]["path"] = path
    assert "files[0].path" in problems_of(document)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("serial", True),
        ("serial", "7"),
        ("serial", 1.5),
        ("min_vram_mb", None),
        ("layer", "everything"),
        ("platform", "Linux x86-64"),
        ("cuda_archs", ["sm_75"]),
        ("min_driver", {"linux": "new"}),
        ("min_driver", {"beos": "580.1"}),
        ("min_driver", {}),
        ("created", "yesterday"),
        ("files", {}),
        ("requires", "cuda-runtime"),
    ],
)
def test_wrong_types_and_values_are_named(field: str, value: Any) -> None:
    document = manifest_doc()
    document[field] = value
    assert field in problems_of(document)


@pytest.mark.parametrize("sha", ["", "0" * 63, "0" * 65, "G" * 64, "A" * 64, 5])
def test_sha256_must_be_64_lowercase_hex(sha: Any) -> None:
    document = manifest_doc()
    document["files"][2]["sha256"] = sha
    assert "files[2].sha256" in problems_of(document)


def test_newer_format_says_to_update() -> None:
    document = manifest_doc()
    document["format"] = 3
    assert "update the application" in problems_of(document)


def test_archive_name_must_be_a_plain_tar_zst_name() -> None:
    for name in ("../x.tar.zst", "dir/x.tar.zst", "x.zip"):
        document = manifest_doc()
        document["archive"]["name"] = name
        assert "archive.name" in problems_of(document)


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("../../../etc/passwd", "must point to a regular file"),
        ("/backends/lib/libggml.so.0", "must point to a regular file"),
        ("libmissing.so", "must point to a regular file"),
    ],
)
def test_links_must_stay_on_listed_files(link: str, reason: str) -> None:
    document = manifest_doc()
    document["files"][1]["link"] = link
    assert reason in problems_of(document)


def test_link_must_repeat_its_targets_hash() -> None:
    document = manifest_doc()
    document["files"][1]["sha256"] = PY_SHA
    assert "repeat its target" in problems_of(document)


def test_duplicate_paths_and_wrong_unpacked_size() -> None:
    document = manifest_doc()
    document["files"].append(copy.deepcopy(document["files"][0]))
    message = problems_of(document)
    assert "twice" in message and "unpacked_size" in message


def test_a_file_cannot_also_be_a_directory() -> None:
    document = manifest_doc()
    document["files"].append({"path": "backends/lib/libggml.so/evil", "size": 0, "sha256": PY_SHA})
    assert "lies under 'backends/lib/libggml.so'" in problems_of(document)


def test_layer_requirements_are_checked() -> None:
    document = manifest_doc()
    document["requires"] = None
    assert "must name the cuda-runtime layer" in problems_of(document)
    document = manifest_doc()
    document["requires"]["id"] = "cuda-runtime-0000000000000000"
    assert "requires.id" in problems_of(document)
    document = manifest_doc()
    document["layer"] = "cuda-runtime"
    document["files"] = [{"path": "lib/libcudart.so.13", "size": 5, "sha256": LIB_SHA}]
    document["unpacked_size"] = 5
    assert "must be null for a cuda-runtime layer" in problems_of(document)
    document["requires"] = None
    assert parse_manifest(encode(document)).requires is None


@pytest.mark.parametrize("data", [b"", b"not json", b"\xff", b"[1, 2]", b"null"])
def test_not_an_object_is_refused(data: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(data)


def to_requirements(manifest: Any, os_name: str) -> OverlayRequirements:
    return requirements_for(manifest, os_name)


def test_to_requirements_picks_the_os_driver() -> None:
    manifest = parse_manifest(encode(manifest_doc()))
    assert requirements_for(manifest, "linux") == OverlayRequirements(
        overlay_version="0.3.36-cu13.0-1",
        serial=7,
        cuda_version="13.0",
        min_driver="580.65.06",
        cuda_archs=("75",),
        ptx_archs=(),
        min_vram_mb=1024,
    )
    assert requirements_for(manifest, "windows").min_driver == "580.88"
    document = manifest_doc()
    document["min_driver"] = {"linux": "580.65.06"}
    with pytest.raises(ManifestError, match="no minimum driver for windows"):
        requirements_for(parse_manifest(encode(document)), "windows")


def entries_of(document: dict[str, Any]) -> Any:
    return known_entries(parse_release_list(encode(document)), "overlays.json")


def test_valid_index_round_trips() -> None:
    index = parse_release_list(encode(index_doc()))
    (entry,), skipped = known_entries(index, "overlays.json")
    assert skipped == ()
    assert entry.layer("llama-cuda").archive == "llama-cuda.tar.zst"
    assert parse_release_list(dump_index(index)) == index
    assert (
        dump_index(index) == json.dumps(index_doc(), sort_keys=True, separators=(",", ":")).encode()
    )
    releases = parse_index(encode(releases_doc()))
    assert (
        dump_index(releases)
        == json.dumps(releases_doc(), sort_keys=True, separators=(",", ":")).encode()
    )


def test_index_problems_are_collected() -> None:
    document = index_doc()
    entry = document["overlays"][0]
    entry["layers"][0]["manifest"] = "has space.json"
    entry["layers"][0]["manifest_sha256"] = "nope"
    entries, (message,) = entries_of(document)
    assert entries == ()
    for text in (
        "layers[0].manifest: must be a URL without spaces",
        "layers[0].manifest_sha256: must be 64",
    ):
        assert text in message
    releases = releases_doc()
    del releases["expires"]
    with pytest.raises(ManifestError, match="expires: Field required"):
        parse_index(encode(releases))


def test_index_checks_across_fields_name_their_fields() -> None:
    """Once every field is valid, the checks between fields run and name what they concern."""
    document = index_doc()
    entry = document["overlays"][0]
    entry["serial"] = 10
    entry["layers"].pop()
    _, (message,) = entries_of(document)
    assert "layers: a cuda release lists each of cuda-runtime, llama-cuda once" in message
    document["overlays"][0]["layers"] = index_doc()["overlays"][0]["layers"]
    _, (message,) = entries_of(document)
    assert "overlays[0]: serial 10 is newer than the list's 9" in message


@pytest.mark.parametrize(
    "expires", ["2026-12-25T00:00:00+01:00", "2026-12-25T00:00:00", "next month"]
)
def test_index_expiry_must_be_a_utc_time(expires: str) -> None:
    document = releases_doc()
    document["expires"] = expires
    with pytest.raises(ManifestError, match="expires: must be an ISO 8601"):
        parse_index(encode(document))


def test_index_expiry_reads_as_an_aware_time() -> None:
    expires_at = parse_index(encode(releases_doc())).expires_at
    assert (expires_at.isoformat(), expires_at.utcoffset()) == (
        "2026-12-25T00:00:00+00:00",
        timedelta(0),
    )


@pytest.mark.parametrize(
    "component",
    [
        "x" * 256,  # 256 bytes: more than ext4, APFS or NTFS take
        "\u00e9" * 128,  # 128 characters but 256 UTF-8 bytes
        "\U0001f600" * 128,  # 256 UTF-16 units (NTFS's limit is 255)
    ],
)
def test_path_component_longer_than_file_systems_allow_is_refused(component: str) -> None:
    document = manifest_doc()
    document["files"][0]["path"] = f"backends/{component}"
    message = problems_of(document)
    assert "files[0].path" in message and "longer than file systems allow" in message


def test_path_component_of_255_bytes_is_accepted() -> None:
    document = manifest_doc()
    document["files"][0]["path"] = "backends/" + "x" * 255
    assert parse_manifest(encode(document)).files[0].path.endswith("x" * 255)
