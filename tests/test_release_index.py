"""The release index can grow: today's reader skips what it does not know and keeps the rest.

The documents here are what a newer publisher could sign (new kinds, a newer reader, new
optional fields); the reader must still install what it understands, and stay strict on the
fields it knows.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamaship_contract.overlay_fields import ManifestError
from llamaship_contract.release_index import (
    READER,
    known_entries,
    parse_index,
    parse_release_list,
)
from llamaship_contract.signing import SigningKeyError, generate_keypair
from llamaship_contract.trust import TrustedKeys, parse_trusted_keys, trusted

SHA = "ab" * 32


def _layer(name: str) -> dict[str, Any]:
    return {
        "layer": name,
        "id": f"{name}-{SHA[:16]}",
        "manifest": f"{name}.json",
        "manifest_sha256": SHA,
        "archive": f"{name}.tar.zst",
    }


def cuda_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": "cuda",
        "overlay_version": "0.3.36-cu13.0-5",
        "serial": 5,
        "platform": "linux_x86_64",
        "python_tag": "py3",
        "llama_cpp_version": "0.3.36",
        "min_vram_mb": 1024,
        "glibc_floor": "2.31",
        "glibcxx_floor": "3.4.26",
        "cuda_version": "13.0",
        "min_driver": {"linux": "580.65.06"},
        "cuda_archs": ["75"],
        "ptx_archs": [],
        "layers": [_layer("cuda-runtime"), _layer("llama-cuda")],
    }
    entry.update(changes)
    return entry


def vulkan_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": "vulkan",
        "overlay_version": "0.3.36-vk-5",
        "serial": 5,
        "platform": "linux_x86_64",
        "python_tag": "py3",
        "llama_cpp_version": "0.3.36",
        "min_vram_mb": 0,
        "glibc_floor": "2.31",
        "vulkan_api": "1.2",
        "shader_features": ["coopmat", "integer_dot", "bf16"],
        "layers": [_layer("llama-vulkan")],
    }
    entry.update(changes)
    return entry


def release_list(*entries: dict[str, Any], **top: Any) -> bytes:
    document = {"format": 2, "serial": 9, "created": "2026-12-07T00:00:00Z", "overlays": entries}
    document.update(top)
    return json.dumps(document).encode()


def test_todays_reader_takes_the_next_formats_list_and_installs_what_it_knows() -> None:
    data = release_list(
        cuda_entry(notes="a field added later", download_hint={"cdn": "x"}),
        {**vulkan_entry(), "kind": "rocm", "layers": [_layer("llama-rocm")]},
        vulkan_entry(reader=READER + 1, needs_new_rule=True),
        vulkan_entry(),
        mirrors=["https://mirror.example/"],  # a new optional field at the top, ignored
    )
    entries, skipped = known_entries(parse_release_list(data), "overlays.json")
    assert [(entry.kind, entry.overlay_version) for entry in entries] == [
        ("cuda", "0.3.36-cu13.0-5"),
        ("vulkan", "0.3.36-vk-5"),
    ]
    assert len(skipped) == 2
    assert "'rocm'" in skipped[0] and "skipped" in skipped[0]
    assert f"reader {READER + 1}" in skipped[1] and "a newer llamaship" in skipped[1]
    vulkan = entries[1]
    assert vulkan.vulkan_api == "1.2" and "coopmat" in vulkan.shader_features
    assert vulkan.layer("llama-vulkan").archive == "llama-vulkan.tar.zst"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"layers": [{**_layer("llama-cuda"), "manifest_sha256": "not-a-hash"}]}, "sha256"),
        ({"serial": 99}, "newer than the list's 9"),
        ({"serial": "5"}, "serial"),
        ({"cuda_archs": [], "ptx_archs": []}, "runs on no GPU"),
        ({"layers": [_layer("llama-cuda")]}, "cuda-runtime, llama-cuda"),
        ({"vulkan_api": "1.3"}, "vulkan layers only"),
    ],
)
def test_a_known_entry_with_a_bad_security_field_is_never_used(
    change: dict[str, Any], named: str
) -> None:
    data = release_list(cuda_entry(**change), vulkan_entry())
    entries, skipped = known_entries(parse_release_list(data), "overlays.json")
    assert [entry.kind for entry in entries] == ["vulkan"]
    assert len(skipped) == 1 and named in skipped[0]


def test_the_envelopes_stay_strict_on_what_they_know() -> None:
    with pytest.raises(ManifestError, match="format"):
        parse_release_list(release_list(cuda_entry(), format=3))
    index = {
        "format": 2,
        "serial": 10,
        "created": "2026-12-07T00:00:00Z",
        "expires": "2027-01-06T00:00:00Z",
        "overlays": {"name": "overlays.json", "size": 100, "sha256": SHA, "serial": 9},
    }
    assert parse_index(json.dumps(index).encode()).overlays.sha256 == SHA
    for bad, named in (
        ({"expires": "2027-01-06T00:00:00+02:00"}, "expires"),
        ({"overlays": {**index["overlays"], "name": "../overlays.json"}}, "overlays.name"),
        ({"overlays": {**index["overlays"], "sha256": "x"}}, "overlays.sha256"),
    ):
        with pytest.raises(ManifestError, match=named):
            parse_index(json.dumps({**index, **bad}).encode())


def test_trusted_keys_have_one_role_each() -> None:
    release, index = generate_keypair()[1], generate_keypair()[1]
    keys = parse_trusted_keys(json.dumps({"release": [release], "index": [index]}), "t.json")
    assert keys == TrustedKeys(release=(release,), index=(index,))
    assert keys.for_index == (release, index)
    assert trusted([release]) == TrustedKeys(release=(release,))
    for document, named in (
        ([release], "JSON object"),
        ({"release": [release]}, "JSON object"),
        ({"release": [], "index": [index]}, "no release key"),
        ({"release": [release], "index": [release]}, "both roles"),
        ({"release": ["not a key"], "index": []}, "'release' list"),
    ):
        with pytest.raises(SigningKeyError, match=named):
            parse_trusted_keys(json.dumps(document), "t.json")
