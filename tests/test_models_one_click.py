"""One call from nothing to a model in use: `POST /api/models/pull {"use": true}` with the
bundled catalogue, the hub (LLAMASHIP_HUB_URL) and its CDN on loopback, the real gemma GGUF
published under the default chat model's file name; the model then answers without a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures_backend import RunningBackend
from hub_kit import LoopbackHub, loopback_hub
from llamaship.config import load_settings
from llamaship.models.store import ModelStore
from models_kit import Gemma
from test_models_api import wait_for_job

DEFAULT_CHAT = ModelStore(Path("/nonexistent")).default_chat()


@pytest.fixture
def site(tmp_path: Path, gemma: Gemma) -> Iterator[LoopbackHub]:
    www = tmp_path / "www"
    www.mkdir()
    (www / DEFAULT_CHAT.file_name).symlink_to(gemma.path)
    with loopback_hub(www) as site:
        site.hub.publish(DEFAULT_CHAT.file_name, gemma.sha256, gemma.size)
        yield site


def hub_settings(site: LoopbackHub) -> dict[str, str]:
    return {"LLAMASHIP_HUB_URL": site.hub.url, "LLAMASHIP_HUB_ALLOW_HTTP": "true"}


def test_one_call_pulls_verifies_and_serves_the_default_chat_model(
    start_backend: type[RunningBackend], site: LoopbackHub, gemma: Gemma
) -> None:
    backend: RunningBackend = start_backend(**hub_settings(site))  # type: ignore[call-arg]
    home = backend.state.dirs.home
    with backend.client() as client:
        listed = client.get("/api/models").json()
        assert listed["default_chat"] == DEFAULT_CHAT.name and listed["serving"] is None
    with backend.admin_client() as admin:
        started = admin.post("/api/models/pull", json={"name": DEFAULT_CHAT.name, "use": True})
        assert started.status_code == 202, started.text
        job, _ = wait_for_job(admin, started.json()["job_id"])
        assert job["state"] == "succeeded", job
        path = home / "models" / DEFAULT_CHAT.file_name
        assert job["message"] == f"{DEFAULT_CHAT.name} is verified and in use ({path})"
        caps = admin.get("/api/capabilities").json()
        assert caps["model"]["id"] == DEFAULT_CHAT.file_name and caps["model"]["loaded"], caps
        reply = admin.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2},
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == DEFAULT_CHAT.file_name
    assert site.hub.heads == [f"/unsloth/Qwen3-0.6B-GGUF/resolve/main/{DEFAULT_CHAT.file_name}"], (
        "the hub was asked for the hash"
    )
    assert [request.path for request in site.cdn.requests] == [DEFAULT_CHAT.file_name]
    path = home / "models" / DEFAULT_CHAT.file_name
    assert load_settings(env={"LLAMASHIP_HOME": str(home)}).model == path


def test_a_hub_without_a_hash_fails_the_job_with_what_to_do(
    start_backend: type[RunningBackend], site: LoopbackHub
) -> None:
    site.hub.publish(DEFAULT_CHAT.file_name, None, None)
    backend: RunningBackend = start_backend(**hub_settings(site))  # type: ignore[call-arg]
    with backend.admin_client() as admin:
        started = admin.post("/api/models/pull", json={"name": DEFAULT_CHAT.name, "use": True})
        job, _ = wait_for_job(admin, started.json()["job_id"])
        caps = admin.get("/api/capabilities").json()
    assert job["state"] == "failed"
    assert "publishes no sha256 and size" in job["message"]
    assert "--accept-unverified" in job["message"]
    assert caps["model"]["id"] is None
    assert site.cdn.requests == []


def test_plain_http_for_the_hub_needs_the_explicit_setting(
    start_backend: type[RunningBackend], site: LoopbackHub
) -> None:
    backend: RunningBackend = start_backend(LLAMASHIP_HUB_URL=site.hub.url)  # type: ignore[call-arg]
    with backend.admin_client() as admin:
        refused = admin.post("/api/models/pull", json={"name": DEFAULT_CHAT.name, "use": True})
    assert refused.status_code == 500, refused.text
    error = refused.json()["error"]
    assert error["code"] == "config_error" and "expected an https:// URL" in error["message"]
    assert site.hub.heads == []


def test_a_model_that_does_not_load_is_not_chosen_and_the_served_one_stays(
    start_backend: type[RunningBackend], site: LoopbackHub, gemma: Gemma
) -> None:
    backend: RunningBackend = start_backend(**hub_settings(site))  # type: ignore[call-arg]
    models = backend.state.dirs.home / "models"
    models.mkdir()
    (models / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 64)  # the magic, then nothing usable
    with backend.admin_client() as admin:
        started = admin.post("/api/models/pull", json={"name": DEFAULT_CHAT.name, "use": True})
        job, _ = wait_for_job(admin, started.json()["job_id"])
        assert job["state"] == "succeeded", job
        refused = admin.post("/api/models/use", json={"name": "broken.gguf"})
        caps = admin.get("/api/capabilities").json()
        listed = admin.get("/api/models").json()
    assert refused.status_code >= 400, refused.text
    assert "could not load" in refused.json()["error"]["message"]
    assert caps["model"]["id"] == DEFAULT_CHAT.file_name
    assert listed["active"] == DEFAULT_CHAT.file_name
