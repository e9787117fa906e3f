"""Pulling, choosing and removing models: the real gemma GGUF over loopback HTTP, with faults.

Each failure test ends asserting that nothing (or only the resumable partial download) is
left under LLAMASHIP_HOME/models and that the error says what happened.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaship.config import load_settings
from llamaship.errors import ConfigError
from llamaship.io.fs import DiskSpaceError
from llamaship.io.http_session import DownloadLimits
from llamaship.io.transfer import DownloadError, DownloadIncomplete, IntegrityError
from llamaship.models.settings import read_user_settings, settings_path
from llamaship.models.store import (
    ModelNotInstalled,
    ModelStore,
    UnknownModel,
    UnverifiedModel,
)
from llamaship_contract.document import parse_document
from llamaship_contract.errors import ContractError, LlamashipError
from llamaship_contract.models import ModelCatalogue
from llamaship_contract.names import ExitStatus
from models_kit import GEMMA_FILE, ONE_TRY, Gemma, ModelServer, files_under


def store_for(
    home: Path, gemma: Gemma, server: ModelServer, limits: DownloadLimits = ONE_TRY
) -> ModelStore:
    return ModelStore(home, gemma.catalogue(server.url), limits=limits)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def gguf_files(home: Path) -> list[str]:
    return files_under(home / "models")


# -- a pull that works, then use -------------------------------------------------------------


def test_a_pull_completes_is_used_and_settings_json_is_the_lowest_layer(
    home: Path, gemma: Gemma, model_server: ModelServer
) -> None:
    store = store_for(home, gemma, model_server)
    seen: list[tuple[int, int]] = []

    model = store.pull(store.source("gemma3-270m"), lambda done, total: seen.append((done, total)))

    assert model.path == home / "models" / GEMMA_FILE
    assert (model.name, model.size) == ("gemma3-270m", gemma.size)
    assert gguf_files(home) == [GEMMA_FILE]  # no partial download left
    assert seen[-1] == (gemma.size, gemma.size) and len(seen) > 2
    store.use("gemma3-270m")
    assert read_user_settings(home).model == GEMMA_FILE
    env = {"LLAMASHIP_HOME": str(home)}
    assert load_settings(env=env).model == model.path
    # .env, the environment and the command line all win over settings.json
    other = str(home / "other.gguf")
    (home / ".env").write_text(f"LLAMASHIP_MODEL={other}\n")
    assert load_settings(env=env).model == Path(other)
    (home / ".env").unlink()
    assert load_settings(env={**env, "LLAMASHIP_MODEL": other}).model == Path(other)
    assert load_settings(cli={"LLAMASHIP_MODEL": other}, env=env).model == Path(other)
    # pulling again keeps the installed copy (checked against its sha256, not downloaded)
    requests = len(model_server.requested(GEMMA_FILE))
    assert store.pull(store.source(GEMMA_FILE)).path == model.path
    assert len(model_server.requested(GEMMA_FILE)) == requests


def test_remove_deletes_the_file_and_the_choice(
    home: Path, gemma: Gemma, model_server: ModelServer
) -> None:
    store = store_for(home, gemma, model_server)
    store.pull(store.source("gemma3-270m"))
    store.use(GEMMA_FILE)

    store.remove("gemma3-270m")

    assert gguf_files(home) == []
    assert read_user_settings(home).model is None
    with pytest.raises(ModelNotInstalled, match=r"'gemma3-270m' is not installed.*models pull"):
        store.use("gemma3-270m")


# -- faults -----------------------------------------------------------------------------------


def test_a_cut_connection_keeps_the_part_and_the_next_pull_resumes_with_range(
    home: Path, gemma: Gemma, model_server: ModelServer
) -> None:
    store = store_for(home, gemma, model_server)
    model_server.inject(GEMMA_FILE, "truncate")

    with pytest.raises(DownloadIncomplete, match=r"failed after 1 attempts: .*peer closed"):
        store.pull(store.source("gemma3-270m"))
    assert gguf_files(home) == [f".partial/{GEMMA_FILE}.part", f".partial/{GEMMA_FILE}.part.meta"]
    kept = (home / "models" / ".partial" / f"{GEMMA_FILE}.part").stat().st_size
    assert 0 < kept < gemma.size

    store.pull(store.source("gemma3-270m"))

    first, second = model_server.requested(GEMMA_FILE)
    assert first.range is None
    assert (second.range, second.status) == (f"bytes={kept}-", 206)
    assert second.if_range is not None
    assert gguf_files(home) == [GEMMA_FILE]


def test_a_wrong_hash_leaves_nothing_in_models(
    home: Path, gemma: Gemma, model_server: ModelServer
) -> None:
    store = store_for(home, gemma, model_server)
    with pytest.raises(IntegrityError, match=r"corrupted or was tampered with.*deleted"):
        store.pull(store.source("gemma-wrong-hash"))
    assert gguf_files(home) == []


def test_a_404_is_one_clear_error(home: Path, gemma: Gemma, model_server: ModelServer) -> None:
    store = store_for(home, gemma, model_server)
    with pytest.raises(DownloadError, match=r"missing\.gguf.*HTTP 404"):
        store.pull(store.source("gemma-missing"))
    assert gguf_files(home) == []


def test_a_slow_server_is_cut_off_at_the_deadline(
    home: Path, gemma: Gemma, model_server: ModelServer
) -> None:
    limits = DownloadLimits(max_attempts=1, deadline_grace_s=3.0, min_bytes_per_second=2**40)
    store = store_for(home, gemma, model_server, limits)
    model_server.inject(GEMMA_FILE, "slow", forever=True)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="too slow"):
        store.pull(store.source("gemma3-270m"))
    assert time.monotonic() - started < 15
    assert not (home / "models" / GEMMA_FILE).exists()


@pytest.fixture
def tiny_home(tmp_path: Path) -> Iterator[Path]:
    """LLAMASHIP_HOME on a 16 MiB tmpfs (the root tier: mounting needs root)."""
    home = tmp_path / "tiny-home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(home)], check=True)
    try:
        yield home
    finally:
        subprocess.run(["umount", str(home)], check=True)


@pytest.mark.root
def test_too_little_free_space_is_refused_before_downloading(
    tiny_home: Path, gemma: Gemma, model_server: ModelServer
) -> None:
    store = store_for(tiny_home, gemma, model_server)
    with pytest.raises(DiskSpaceError, match=r"not enough disk space.*only .* MiB are free"):
        store.pull(store.source("gemma3-270m"))
    assert model_server.requested(GEMMA_FILE) == []
    assert gguf_files(tiny_home) == []


# -- bad input --------------------------------------------------------------------------------


def test_a_name_not_in_the_catalogue_gets_a_suggestion_and_writes_nothing(
    home: Path, gemma: Gemma, model_server: ModelServer
) -> None:
    store = store_for(home, gemma, model_server)
    with pytest.raises(
        UnknownModel,
        match="'gemma3-270' is not in the model catalogue: did you mean gemma3-270m\\?",
    ):
        store.source("gemma3-270")
    assert not home.exists()


def test_an_unverified_entry_needs_a_hash_or_an_explicit_acceptance(
    home: Path, gemma: Gemma, model_server: ModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_for(home, gemma, model_server)
    with pytest.raises(UnverifiedModel, match=r"--sha256 HASH.*--accept-unverified"):
        store.source("gemma-unverified")
    with pytest.raises(LlamashipError, match="is not 64 hex digits"):
        store.source("gemma-unverified", sha256="abc")
    with pytest.raises(IntegrityError):
        store.pull(store.source("gemma-unverified", sha256="1" * 64))
    assert gguf_files(home) == []

    with caplog.at_level(logging.WARNING):
        store.pull(store.source("gemma-unverified", accept_unverified=True))
    assert "WITHOUT checking its content" in caplog.text
    assert f"its sha256 is {gemma.sha256}" in caplog.text
    assert model_server.heads == [GEMMA_FILE, GEMMA_FILE]  # the size came from HEAD
    assert gguf_files(home) == ["gemma-unverified.gguf"]


def test_the_bundled_catalogue_holds_the_defaults_verified_by_the_hub() -> None:
    store = ModelStore(Path("/nonexistent"))
    by_name = {entry.name: entry for entry in store.catalogue.models}
    assert set(by_name) == {"qwen3-0.6b", "nomic-embed-text-v1.5"}
    assert [entry.purpose for entry in by_name.values()] == ["chat", "embedding"]
    assert all(entry.hash_from == "hub" and entry.sha256 is None for entry in by_name.values())
    assert by_name["qwen3-0.6b"].url.startswith("https://huggingface.co/unsloth/Qwen3-0.6B-GGUF/")


def test_a_catalogue_entry_without_a_hash_must_be_marked_unverified() -> None:
    entry = {
        "name": "x",
        "file_name": "x.gguf",
        "url": "https://example.org/x.gguf",
        "size": None,
        "sha256": None,
        "license": "MIT",
        "purpose": "chat",
        "context_length": 1,
        "min_ram_mb": 1,
    }
    with pytest.raises(
        ContractError,
        match=r"models\[0\]\.sha256: required unless the "
        "entry is marked unverified",
    ):
        parse_document(ModelCatalogue, {"models": [entry]}, "test catalogue")


# -- settings.json as a configuration layer ---------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "layers", "expected"),
    [("auto", None, None), ("full", None, -1), ("mixed", 12, 12), ("cpu", None, 0)],
)
def test_the_offload_mode_maps_to_n_gpu_layers(
    home: Path, mode: str, layers: int | None, expected: int | None
) -> None:
    home.mkdir()
    settings_path(home).write_text(
        f'{{"offload_mode": "{mode}", "offload_layers": {"null" if layers is None else layers}}}'
    )
    env = {"LLAMASHIP_HOME": str(home)}
    assert load_settings(env=env).n_gpu_layers == expected
    assert load_settings(env={**env, "LLAMACPP_N_GPU_LAYERS": "3"}).n_gpu_layers == 3


def test_a_broken_settings_file_is_one_config_error_naming_it(home: Path) -> None:
    home.mkdir()
    settings_path(home).write_text('{"offload_mode": "mixed"}')
    with pytest.raises(
        ConfigError,
        match=r"settings\.json is not a valid UserSettings.*"
        "offload_layers: required.*delete it",
    ):
        load_settings(env={"LLAMASHIP_HOME": str(home)})


# -- the command line -------------------------------------------------------------------------


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLAMASHIP_", "LLAMACPP_", "GPU_DETECTION_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "llamaship", "models", *args],
        env={**env, "LLAMASHIP_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("pull", "nope"), ExitStatus.CONFIG, "'nope' is not in the model catalogue"),
        (("pull", "https://example.org/model.gguf"), ExitStatus.CONFIG, "pass --sha256 HASH"),
        (("use", "qwen3-0.6b"), ExitStatus.CONFIG, "'qwen3-0.6b' is not installed"),
        (("remove", "x"), ExitStatus.CONFIG, "'x' is not installed"),
        (
            ("pull", "https://example.org/model.bin", "--sha256", "0" * 64),
            ExitStatus.CONFIG,
            "does not end in a plain .gguf file name",
        ),
    ],
    ids=["unknown", "unverified", "use-missing", "remove-missing", "not-gguf-url"],
)
def test_the_cli_refuses_bad_input_in_one_line(
    home: Path, args: tuple[str, ...], status: int, message: str
) -> None:
    result = run_cli(home, *args)
    assert result.returncode == status, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("llamaship: error: ") and message in result.stderr
    assert gguf_files(home) == []


def test_the_cli_pulls_a_url_with_its_hash_uses_and_lists_it(
    home: Path, gemma: Gemma, model_server: ModelServer
) -> None:
    url = model_server.url + GEMMA_FILE
    missing = run_cli(home, "pull", model_server.url + "missing.gguf", "--sha256", gemma.sha256)
    assert missing.returncode == ExitStatus.DOWNLOAD, missing.stderr
    assert "HTTP 404" in missing.stderr and missing.stderr.count("\n") == 1, missing.stderr

    pulled = run_cli(home, "pull", url, "--sha256", gemma.sha256.upper())
    assert pulled.returncode == 0, pulled.stderr
    assert gguf_files(home) == [GEMMA_FILE]
    used = run_cli(home, "use", GEMMA_FILE)
    assert used.returncode == 0, used.stderr
    listed = run_cli(home, "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{GEMMA_FILE}  ?" in listed.stdout and "installed, active" in listed.stdout
    removed = run_cli(home, "remove", GEMMA_FILE)
    assert removed.returncode == 0 and gguf_files(home) == [], removed.stderr
