"""The backend's HTTP API without a loaded model: status routes, model errors, bad requests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fixtures_backend import RunningBackend
from llamaship_contract.errors import LlamashipError

StartBackend = Callable[..., RunningBackend]
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def assert_error(reply: httpx.Response, status: int, code: str, *fragments: str) -> str:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code
    assert error["type"]
    for fragment in fragments:
        assert fragment in error["message"]
    message: str = error["message"]
    return message


def test_health_answers_ok(start_backend: StartBackend) -> None:
    with start_backend().client() as client:
        assert client.get("/api/health").json() == {"status": "ok"}


def test_capabilities_report_the_cpu_decision_without_gpus(start_backend: StartBackend) -> None:
    backend = start_backend()
    with backend.client() as client:
        capabilities = client.get("/api/capabilities").json()
    assert capabilities["gpus"] == []
    assert capabilities["detection"]["source"] == "none"
    assert capabilities["detection"]["errors"] == ["NVML: libnvidia-ml.so.1 not found"]
    assert capabilities["decision"] == {
        "variant": "cpu",
        "reason": "no NVIDIA GPU detected",
        "upgrade_available": False,
    }
    assert capabilities["llama_cpp"]["variant"] == "cpu"
    assert capabilities["llama_cpp"]["gpu_offload"] is False
    assert capabilities["llama_cpp"]["version"] == backend.state.llama_cpp_version
    assert capabilities["llama_cpp"]["path"] == str(backend.state.llama_cpp_path)
    assert capabilities["overlay"] == {"version": None, "installed": None}
    assert capabilities["recommendation"] == {
        "n_gpu_layers": 0,
        "n_threads": backend.state.n_threads,
    }
    assert capabilities["model"] == {"id": None, "path": None, "loaded": False}
    assert capabilities["events"] == []


def test_models_lists_nothing_without_a_model(start_backend: StartBackend) -> None:
    with start_backend().client() as client:
        assert client.get("/v1/models").json() == {"object": "list", "data": []}


def test_unknown_route_is_an_openai_style_404(start_backend: StartBackend) -> None:
    with start_backend().client() as client:
        assert_error(client.get("/v1/nothing"), 404, "not_found", "Not Found")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/api/admin/benchmark"])
def test_no_model_configured_is_a_409_that_says_what_to_set(
    start_backend: StartBackend, path: str
) -> None:
    body = {"input": "hello"} if path == "/v1/embeddings" else CHAT if "chat" in path else {}
    with start_backend().admin_client() as client:
        reply = client.post(path, json=body)
    assert_error(reply, 409, "model_not_configured", "LLAMASHIP_MODEL", "--model")


def test_streaming_request_gets_the_error_as_json_not_a_stream(
    start_backend: StartBackend,
) -> None:
    with start_backend().client() as client:
        reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.headers["content-type"] == "application/json"
    assert_error(reply, 409, "model_not_configured", "LLAMASHIP_MODEL")


def test_missing_model_file_is_a_409_naming_the_file(
    start_backend: StartBackend, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.gguf"
    with start_backend(LLAMASHIP_MODEL=str(missing)).client() as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
    assert_error(reply, 409, "model_file_missing", str(missing), "LLAMASHIP_MODEL")


def test_a_file_that_is_not_gguf_is_a_422(start_backend: StartBackend, tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with start_backend(LLAMASHIP_MODEL=str(weights)).client() as client:
        reply = client.post("/v1/embeddings", json={"input": "hello"})
    assert_error(reply, 422, "not_a_gguf", str(weights), "not a GGUF file", ".gguf")


def test_a_directory_as_model_is_a_422(start_backend: StartBackend, tmp_path: Path) -> None:
    with start_backend(LLAMASHIP_MODEL=str(tmp_path)).client() as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
    assert_error(reply, 422, "not_a_gguf", "is a directory")


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"messages": "Hi"}, "messages", "valid list"),
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "Field required"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "valid string"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "'user'"),
        ({**CHAT, "max_tokens": "lots"}, "max_tokens", "valid integer"),
        ({**CHAT, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({**CHAT, "temperature": -1}, "temperature", "greater than or equal to 0"),
        ({**CHAT, "stream": "yes"}, "stream", "valid boolean"),
        ({**CHAT, "stop": 7}, "stop", "a string or a list of strings"),
        ({"model": "gemma"}, "messages", "Field required"),
    ],
)
def test_chat_schema_violations_are_422_naming_the_field(
    start_backend: StartBackend, body: dict[str, object], field: str, fragment: str
) -> None:
    with start_backend().client() as client:
        reply = client.post("/v1/chat/completions", json=body)
    message = assert_error(reply, 422, "invalid_request", field, fragment)
    assert reply.json()["error"]["param"] == field, message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": 3}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["a", 2]}, "input"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_embedding_schema_violations_are_422(
    start_backend: StartBackend, body: dict[str, object], field: str
) -> None:
    with start_backend().client() as client:
        reply = client.post("/v1/embeddings", json=body)
    assert_error(reply, 422, "invalid_request", field)


def test_benchmark_refuses_unknown_fields_and_out_of_range_counts(
    start_backend: StartBackend,
) -> None:
    with start_backend().admin_client() as client:
        assert_error(
            client.post("/api/admin/benchmark", json={"tokens": 5}),
            422,
            "invalid_request",
            "tokens",
            "Extra inputs",
        )
        assert_error(
            client.post("/api/admin/benchmark", json={"n_gen": 1}), 422, "invalid_request", "n_gen"
        )


def test_malformed_json_is_a_400_that_says_where(start_backend: StartBackend) -> None:
    with start_backend().client() as client:
        reply = client.post(
            "/v1/chat/completions",
            content=b'{"messages": [',
            headers={"Content-Type": "application/json"},
        )
    assert_error(reply, 400, "invalid_json", "not valid JSON", "at character")


def test_a_body_without_json_content_type_is_refused(start_backend: StartBackend) -> None:
    with start_backend().client() as client:
        reply = client.post(
            "/v1/chat/completions",
            content=b'{"messages": []}',
            headers={"Content-Type": "text/plain"},
        )
    assert_error(reply, 415, "unsupported_media_type", "Content-Type: application/json")


def test_the_server_keeps_answering_after_bad_requests(start_backend: StartBackend) -> None:
    with start_backend().client() as client:
        for _ in range(3):
            client.post(
                "/v1/chat/completions",
                content=b"\xff\xfe not json",
                headers={"Content-Type": "application/json"},
            )
            client.post("/v1/chat/completions", json={"messages": 42})
            client.post("/v1/embeddings", json={"input": "x"})
        assert client.get("/api/health").json() == {"status": "ok"}
        assert client.get("/api/capabilities").status_code == 200


class DiskFull(LlamashipError):
    """Stands for any llamaship error a future route raises (overlay install...)."""


def _add_failing_routes(app: FastAPI) -> None:
    def llamaship_failure() -> None:
        raise DiskFull("No space left in /data: free 2 GB and try again.")

    def bug() -> None:
        raise KeyError("boom")

    app.add_api_route("/test/llamaship-error", llamaship_failure)
    app.add_api_route("/test/bug", bug)


def test_llamaship_errors_and_bugs_are_500_json_and_the_server_stays_up(
    start_backend: StartBackend,
) -> None:
    with start_backend(_add_failing_routes).client() as client:
        assert_error(client.get("/test/llamaship-error"), 500, "disk_full", "free 2 GB")
        assert_error(client.get("/test/bug"), 500, "internal_error", "KeyError", "boom")
        assert client.get("/api/health").json() == {"status": "ok"}
