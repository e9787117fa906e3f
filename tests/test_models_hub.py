"""Pulls verified against the hub's published sha256 and size: the hub's resolve endpoint and
its CDN on loopback (two host names, two ports), headers and redirect as the real hub sends."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_kit import LoopbackHub, hub_entry, hub_file_url, loopback_hub
from llamaship.errors import ConfigError
from llamaship.io.fs import DiskSpaceError
from llamaship.io.transfer import DownloadIncomplete
from llamaship.models.hub import Hub, HubHashMissing
from llamaship.models.store import ModelIntegrityError, ModelStore
from llamaship_contract.document import parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.models import CatalogueEntry, ModelCatalogue
from llamaship_contract.names import ExitStatus
from models_kit import ONE_TRY, files_under

TINY = "tiny-chat.Q4_K_M.gguf"


@pytest.fixture
def tiny(tmp_path: Path) -> bytes:
    """A small file with the GGUF magic (what the store checks before it installs)."""
    data = b"GGUF" + os.urandom(200_000)
    www = tmp_path / "www"
    www.mkdir()
    (www / TINY).write_bytes(data)
    return data


@pytest.fixture
def site(tmp_path: Path, tiny: bytes) -> Iterator[LoopbackHub]:
    with loopback_hub(tmp_path / "www") as site:
        site.hub.publish(TINY, hashlib.sha256(tiny).hexdigest(), len(tiny))
        yield site


def store_for(
    home: Path, site: LoopbackHub, *entries: CatalogueEntry, free: int | None = None
) -> ModelStore:
    catalogue = ModelCatalogue(models=entries or (hub_entry("tiny-chat", TINY),))
    return ModelStore(
        home,
        catalogue,
        limits=ONE_TRY,
        hub=Hub(site.hub.url, allow_http=True),
        free_space=(lambda _path: free) if free is not None else (lambda _path: 2**40),
    )


def test_a_hub_pull_is_verified_against_the_published_hash_and_recorded(
    tmp_path: Path, site: LoopbackHub, tiny: bytes
) -> None:
    home = tmp_path / "home"
    store = store_for(home, site)
    model = store.pull(store.source("tiny-chat"))
    assert model.path.read_bytes() == tiny
    sha256 = hashlib.sha256(tiny).hexdigest()
    assert store.verified_sha256(TINY) == sha256
    # The hub was asked with HEAD (its redirect not followed); the file came from the CDN.
    resolve = f"/publisher/tiny-GGUF/resolve/main/{TINY}"
    assert site.hub.heads == [resolve]
    assert [request.path for request in site.cdn.requests] == [TINY]
    assert files_under(home / "models") == [f".verified/{TINY}.json", TINY]
    # Installed and recorded: a second pull checks the file against the record, offline.
    assert store.pull(store.source("tiny-chat")).path == model.path
    assert site.hub.heads == [resolve]


def test_a_resumed_pull_keeps_the_recorded_hash_and_a_changed_file_starts_over(
    tmp_path: Path, site: LoopbackHub, tiny: bytes
) -> None:
    home = tmp_path / "home"
    store = store_for(home, site)
    site.cdn.inject(TINY, "truncate")
    with pytest.raises(DownloadIncomplete):
        store.pull(store.source("tiny-chat"))
    recorded = store.verified_sha256(TINY)
    assert recorded == hashlib.sha256(tiny).hexdigest()  # recorded before the download
    kept = (home / "models" / ".partial" / f"{TINY}.part").stat().st_size
    assert 0 < kept < len(tiny)
    assert store.pull(store.source("tiny-chat")).path.read_bytes() == tiny
    first, second = site.cdn.requested(TINY)
    assert first.range is None and (second.range, second.status) == (f"bytes={kept}-", 206)
    assert len(site.hub.heads) == 2  # asked again: the same hash, so the part was kept


def test_a_wrong_published_hash_is_refused_and_nothing_is_kept(
    tmp_path: Path, site: LoopbackHub, tiny: bytes
) -> None:
    site.hub.publish(TINY, "0" * 64, len(tiny))
    home = tmp_path / "home"
    store = store_for(home, site)
    with pytest.raises(ModelIntegrityError) as refused:
        store.pull(store.source("tiny-chat"))
    message = str(refused.value)
    assert "does not match the sha256 the hub gives" in message, message
    assert "Pull it again" in message and "signed manifest" not in message
    assert refused.value.exit_code == ExitStatus.INTEGRITY
    assert files_under(home / "models") == []


@pytest.mark.parametrize(
    ("sha256", "size"),
    [(None, None), (None, 10), ("ab" * 32, None), ("not-a-hash", 10)],
    ids=["no-headers", "no-etag", "no-size", "bad-etag"],
)
def test_a_hub_answer_without_hash_or_size_is_refused_before_downloading(
    tmp_path: Path, site: LoopbackHub, sha256: str | None, size: int | None
) -> None:
    site.hub.publish(TINY, sha256, size)
    home = tmp_path / "home"
    store = store_for(home, site)
    with pytest.raises(HubHashMissing, match=r"--sha256 HASH .* or with --accept-unverified"):
        store.pull(store.source("tiny-chat"))
    assert site.cdn.requests == []
    assert files_under(home / "models") == []


def test_accepting_an_unverified_file_pulls_it_when_the_hub_publishes_no_hash(
    tmp_path: Path, site: LoopbackHub, tiny: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    site.hub.publish(TINY, None, None)
    store = store_for(tmp_path / "home", site)
    with caplog.at_level(logging.WARNING):
        model = store.pull(store.source("tiny-chat", accept_unverified=True))
    assert model.path.read_bytes() == tiny
    assert "WITHOUT checking its content" in caplog.text
    assert store.verified_sha256(TINY) is None


def test_too_little_free_space_is_refused_before_downloading(
    tmp_path: Path, site: LoopbackHub, tiny: bytes
) -> None:
    home = tmp_path / "home"
    store = store_for(home, site, free=len(tiny) - 1)
    with pytest.raises(DiskSpaceError, match="not enough disk space for the model tiny-chat"):
        store.pull(store.source("tiny-chat"))
    assert site.hub.heads  # the size came from the hub
    assert site.cdn.requests == []
    assert files_under(home / "models") == []


def test_a_catalogue_hash_wins_over_the_hub(tmp_path: Path, site: LoopbackHub, tiny: bytes) -> None:
    site.hub.publish(TINY, "0" * 64, len(tiny))  # the hub is wrong; the catalogue is asked
    entry = hub_entry("tiny-chat", TINY, sha256=hashlib.sha256(tiny).hexdigest(), size=len(tiny))
    store = store_for(tmp_path / "home", site, entry)
    assert store.pull(store.source("tiny-chat")).path.read_bytes() == tiny
    assert site.hub.heads == []


def test_a_hub_url_is_verified_by_the_hub_too(tmp_path: Path, site: LoopbackHub) -> None:
    store = store_for(tmp_path / "home", site)
    source = store.source(hub_file_url(TINY))
    assert source.hub_url == f"{site.hub.url}/publisher/tiny-GGUF/resolve/main/{TINY}"
    store.pull(source)
    assert store.verified_sha256(TINY) is not None


def test_the_hub_must_be_https_unless_plain_http_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"expected an https:// URL"):
        Hub("http://127.0.0.1:9")
    assert Hub("http://127.0.0.1:9", allow_http=True).locate(hub_file_url(TINY)) == (
        f"http://127.0.0.1:9/publisher/tiny-GGUF/resolve/main/{TINY}"
    )
    assert Hub().locate("https://example.org/x.gguf") is None


def test_the_bundled_catalogue_leaves_the_hashes_to_the_hub() -> None:
    store = ModelStore(Path("/nonexistent"))
    assert store.default_chat().name == "qwen3-0.6b"
    for entry in store.catalogue.models:
        assert entry.hash_from == "hub" and not entry.unverified, entry
        source = store.source(entry.name)
        assert source.hub_url == entry.url and source.sha256 is None


def test_hash_from_hub_needs_a_hub_url() -> None:
    entry = hub_entry("x", "x.gguf").model_dump() | {"url": "https://example.org/x.gguf"}
    with pytest.raises(ContractError, match=r"hash_from 'hub' needs a https://huggingface\.co/"):
        parse_document(CatalogueEntry, entry, "test entry")
