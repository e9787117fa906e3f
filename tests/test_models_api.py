"""`/api/models` and `/api/settings` over real HTTP on loopback: pulls as jobs with progress,
the choice of model, the user settings, and the admin token on everything that changes state."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures_backend import RunningBackend
from llamaship.config import load_settings
from llamaship.models.settings import settings_path
from llamaship.models.store import ModelStore
from models_kit import GEMMA_FILE, ONE_TRY, Gemma, ModelServer, files_under

StartBackend = Callable[..., RunningBackend]


@pytest.fixture
def backend(start_backend: StartBackend, gemma: Gemma, model_server: ModelServer) -> RunningBackend:
    """A backend whose model store uses the test catalogue (the gemma GGUF on loopback)."""

    def test_store(home: Path) -> ModelStore:
        return ModelStore(home, gemma.catalogue(model_server.url), limits=ONE_TRY)

    return start_backend(model_store=test_store)


def wait_for_job(client: httpx.Client, job_id: str) -> tuple[dict[str, Any], list[int]]:
    """Poll until the job ends: its last state and the byte counts seen on the way."""
    seen: list[int] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        reply = client.get(f"/api/models/pull/{job_id}")
        assert reply.status_code == 200, reply.text
        job: dict[str, Any] = reply.json()
        seen.append(job["bytes_done"])
        if job["state"] != "running":
            return job, seen
        time.sleep(0.05)
    raise AssertionError(f"the pull job {job_id} did not end")


def test_a_pull_job_reports_progress_and_the_model_is_then_used(
    backend: RunningBackend, gemma: Gemma
) -> None:
    home = backend.state.dirs.home
    with backend.client() as client:
        before = client.get("/api/models").json()
    assert before["active"] is None and before["serving"] is None
    assert before["models_dir"] == str(home / "models")
    entry = next(model for model in before["models"] if model["name"] == "gemma3-270m")
    assert entry["installed"] is False and entry["sha256"] == gemma.sha256

    with backend.admin_client() as admin:
        started = admin.post("/api/models/pull", json={"name": "gemma3-270m"})
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        assert admin.post("/api/models/pull", json={"name": "gemma3-270m"}).json() == {
            "job_id": job_id
        }  # the same file: the running job
        job, seen = wait_for_job(admin, job_id)
        assert job == {
            "id": job_id,
            "model": "gemma3-270m",
            "file_name": GEMMA_FILE,
            "state": "succeeded",
            "bytes_done": gemma.size,
            "bytes_total": gemma.size,
            "message": f"gemma3-270m is installed ({home / 'models' / GEMMA_FILE})",
        }
        assert any(0 < done < gemma.size for done in seen), seen
        used = admin.post("/api/models/use", json={"name": "gemma3-270m"})
    assert used.status_code == 200, used.text
    assert used.json() == {
        "active": GEMMA_FILE,
        "name": "gemma3-270m",
        "path": str(home / "models" / GEMMA_FILE),
        "restart_required": False,
    }
    with backend.client() as client:
        after = client.get("/api/models").json()
    assert after["active"] == GEMMA_FILE
    entry = next(model for model in after["models"] if model["name"] == "gemma3-270m")
    assert (entry["installed"], entry["installed_size"], entry["active"]) == (
        True,
        gemma.size,
        True,
    )
    assert load_settings(env={"LLAMASHIP_HOME": str(home)}).model == home / "models" / GEMMA_FILE


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "nope"}, 404, "model_not_found"),
        ({"name": "gemma-unverified"}, 409, "model_unverified"),
        ({"name": "gemma3-270m", "sha256": "xyz"}, 400, "model_request_invalid"),
        ({"name": "gemma3-270m", "sha256": "0" * 64}, 400, "model_request_invalid"),
        (
            {"name": "http://127.0.0.1:1/model.bin", "sha256": "0" * 64},
            400,
            "model_request_invalid",
        ),
        ({"name": "gemma3-270m", "size": 1}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
    ],
    ids=["unknown", "unverified", "bad-hash", "hash-conflict", "not-gguf", "extra-field", "empty"],
)
def test_a_bad_pull_request_is_one_clear_error_and_starts_nothing(
    backend: RunningBackend, body: dict[str, Any], status: int, code: str
) -> None:
    with backend.admin_client() as admin:
        reply = admin.post("/api/models/pull", json=body)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code
    assert files_under(backend.state.dirs.home / "models") == []


def test_a_failed_pull_job_says_why_and_leaves_nothing(backend: RunningBackend) -> None:
    with backend.admin_client() as admin:
        job_id = admin.post("/api/models/pull", json={"name": "gemma-missing"}).json()["job_id"]
        job, _ = wait_for_job(admin, job_id)
        unknown = admin.get("/api/models/pull/0123")
        not_installed = admin.post("/api/models/use", json={"name": "gemma3-270m"})
    assert job["state"] == "failed" and "HTTP 404" in job["message"]
    assert files_under(backend.state.dirs.home / "models") == []
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "pull_job_not_found")
    assert (not_installed.status_code, not_installed.json()["error"]["code"]) == (
        404,
        "model_not_found",
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/models/pull", {"name": "gemma3-270m"}),
        ("GET", "/api/models/pull/0123", None),
        ("POST", "/api/models/use", {"name": "gemma3-270m"}),
        ("POST", "/api/settings", {"gpu_upgrade_consent": "enable"}),
    ],
)
@pytest.mark.parametrize("token", [None, "f" * 64], ids=["no-token", "wrong-token"])
def test_state_changes_and_jobs_need_the_admin_token(
    backend: RunningBackend,
    model_server: ModelServer,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    token: str | None,
) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with backend.client() as client:
        reply = client.request(method, path, json=body, headers=headers)
    assert reply.status_code == 401, reply.text
    assert reply.json()["error"]["code"].startswith("admin_token_")
    assert model_server.requests == []
    assert not settings_path(backend.state.dirs.home).exists()


def test_settings_are_read_changed_field_by_field_and_validated(
    backend: RunningBackend,
) -> None:
    home = backend.state.dirs.home
    with backend.client() as client:
        defaults = client.get("/api/settings").json()
    assert defaults == {
        "settings": {
            "schema": 1,
            "model": None,
            "offload_mode": "auto",
            "offload_layers": None,
            "gpu_upgrade_consent": "unset",
        },
        "path": str(settings_path(home)),
    }
    with backend.admin_client() as admin:
        incomplete = admin.post("/api/settings", json={"offload_mode": "mixed"})
        assert not settings_path(home).exists()  # refused: nothing written
        model = admin.post("/api/settings", json={"model": GEMMA_FILE})
        mixed = admin.post("/api/settings", json={"offload_mode": "mixed", "offload_layers": 12})
        consent = admin.post("/api/settings", json={"gpu_upgrade_consent": "never"})
    assert incomplete.status_code == 400, incomplete.text
    assert incomplete.json()["error"]["code"] == "settings_invalid"
    assert (
        "offload_layers: required when offload_mode is 'mixed'"
        in incomplete.json()["error"]["message"]
    )
    assert model.status_code == 422, model.text  # the model is chosen with /api/models/use
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["restart_required"] is True
    assert consent.json() == {
        "settings": {
            "schema": 1,
            "model": None,
            "offload_mode": "mixed",
            "offload_layers": 12,
            "gpu_upgrade_consent": "never",
        },
        "path": str(settings_path(home)),
        "restart_required": False,
    }
    env = {"LLAMASHIP_HOME": str(home)}
    assert load_settings(env=env).n_gpu_layers == 12
    assert load_settings(env={**env, "LLAMACPP_N_GPU_LAYERS": "0"}).n_gpu_layers == 0


def test_the_bundled_catalogue_is_served_by_default(start_backend: StartBackend) -> None:
    backend = start_backend()
    with backend.client() as client:
        models = client.get("/api/models").json()["models"]
    assert {model["name"] for model in models} == {"qwen3-0.6b", "nomic-embed-text-v1.5"}
    assert all(not model["unverified"] and not model["installed"] for model in models)


def test_files_in_models_that_the_catalogue_does_not_know_are_listed(
    start_backend: StartBackend, gemma: Gemma, tmp_path: Path
) -> None:
    backend = start_backend()
    models_dir = backend.state.dirs.home / "models"
    models_dir.mkdir()
    (models_dir / "mine.gguf").symlink_to(gemma.path)  # not a regular file: not a model
    (models_dir / "own.gguf").write_bytes(b"GGUF")
    with backend.client() as client:
        listed = client.get("/api/models").json()["models"]
    own = [model for model in listed if not model["in_catalogue"]]
    assert own == [
        {
            "name": "own.gguf",
            "file_name": "own.gguf",
            "url": None,
            "size": None,
            "sha256": None,
            "license": None,
            "purpose": None,
            "context_length": None,
            "min_ram_mb": None,
            "unverified": True,
            "in_catalogue": False,
            "installed": True,
            "installed_size": 4,
            "active": False,
        }
    ]
