"""The backend with a real model (gemma3-270m Q4_K_M) on the CPU llama.cpp, over real HTTP."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import httpx

from fixtures_backend import RunningBackend

CHAT = {
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 8,
    "temperature": 0.0,
    "seed": 7,
}
GEMMA_EMBEDDING_SIZE = 640


def server_sent_events(reply: httpx.Response) -> list[str]:
    events = [line.removeprefix("data: ") for line in reply.text.split("\n\n") if line]
    assert all(not event.startswith("data:") for event in events)
    return events


def test_chat_completion_returns_text(gemma_backend: RunningBackend) -> None:
    with gemma_backend.client() as client:
        completion = client.post("/v1/chat/completions", json=CHAT).json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "gemma-3-270m-q4_k_m.gguf"
    choice = completion["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert 0 < completion["usage"]["completion_tokens"] <= 8
    assert completion["usage"]["prompt_tokens"] > 0


def test_streaming_sends_openai_chunks_then_done(gemma_backend: RunningBackend) -> None:
    with gemma_backend.client() as client:
        reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = server_sent_events(reply)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) >= 3
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text.strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


def test_a_stream_closed_early_frees_the_model_for_the_next_request(
    gemma_backend: RunningBackend,
) -> None:
    body = {**CHAT, "max_tokens": 200, "stream": True}
    with gemma_backend.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            next(reply.iter_lines())
        completion = client.post("/v1/chat/completions", json=CHAT).json()
    assert completion["choices"][0]["message"]["content"].strip()


def test_embeddings_are_unit_vectors_of_the_model_dimension(
    gemma_backend: RunningBackend,
) -> None:
    texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Stock prices fell."]
    with gemma_backend.client() as client:
        reply = client.post("/v1/embeddings", json={"input": texts}).json()
    assert reply["object"] == "list"
    assert reply["model"] == "gemma-3-270m-q4_k_m.gguf"
    assert [item["index"] for item in reply["data"]] == [0, 1, 2]
    vectors = [item["embedding"] for item in reply["data"]]
    assert {len(vector) for vector in vectors} == {GEMMA_EMBEDDING_SIZE}
    for vector in vectors:
        assert math.isclose(math.fsum(value * value for value in vector), 1.0, rel_tol=1e-4)
    assert len({tuple(vector) for vector in vectors}) == 3
    assert reply["usage"]["prompt_tokens"] > 0


def test_embedding_of_one_string_in_base64_matches_the_float_form(
    gemma_backend: RunningBackend,
) -> None:
    with gemma_backend.client() as client:
        floats = client.post("/v1/embeddings", json={"input": "hello"}).json()
        packed = client.post(
            "/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}
        ).json()
    vector = floats["data"][0]["embedding"]
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == GEMMA_EMBEDDING_SIZE
    pairs = zip(decoded, vector, strict=True)
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in pairs)


def test_models_lists_the_configured_model(gemma_backend: RunningBackend) -> None:
    with gemma_backend.client() as client:
        models = client.get("/v1/models").json()
    assert [model["id"] for model in models["data"]] == ["gemma-3-270m-q4_k_m.gguf"]
    assert models["data"][0]["owned_by"] == "llamaship"


def test_benchmark_reports_load_time_and_tokens_per_second_and_keeps_them(
    gemma_backend: RunningBackend,
) -> None:
    """pp and tg after a warm-up, timed against llama.cpp's own counters: the benchmark's own
    overhead stays under 2 %; the CPU build's active plan is its CPU run (speed-up 1.0)."""
    with gemma_backend.admin_client() as client:
        reply = client.post("/api/admin/benchmark", json={"n_prompt": 64, "n_gen": 16})
        capabilities = client.get("/api/capabilities").json()
    assert reply.status_code == 200, reply.text
    result = reply.json()
    active = result["active"]
    assert (active["prompt_tokens"], active["generated_tokens"]) == (64, 16)
    assert active["load_seconds"] > 0
    assert active["tokens_per_second"] > 0 and active["prompt_tokens_per_second"] > 0
    assert 0 < active["native_seconds"] <= active["prompt_seconds"] + active["generation_seconds"]
    assert active["overhead_fraction"] < 0.02
    assert (result["variant"], result["gpu_offload"], result["cpu_is_active"]) == (
        "cpu",
        False,
        True,
    )
    assert result["cpu"] == active and result["generation_speedup"] == 1.0
    assert result["model"] == "gemma-3-270m-q4_k_m.gguf"
    assert result["summary"] == f"about {active['tokens_per_second']:.0f} tokens/s, 1.0× CPU"
    assert capabilities["benchmark"]["summary"] == result["summary"]
    stored = gemma_backend.state.dirs.state / "benchmark.json"
    assert json.loads(stored.read_text())["active"] == active


def test_the_model_still_serves_after_a_benchmark(gemma_backend: RunningBackend) -> None:
    with gemma_backend.admin_client() as client:
        client.post("/api/admin/benchmark", json={"n_prompt": 8, "n_gen": 4}).raise_for_status()
        reply = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        )
    assert reply.status_code == 200


def test_a_prompt_longer_than_the_context_is_a_400_and_the_model_still_serves(
    gemma_backend: RunningBackend,
) -> None:
    long_prompt = "word " * 2000  # the test backend has a context of 512 tokens
    with gemma_backend.client() as client:
        for stream in (False, True):
            body = {"messages": [{"role": "user", "content": long_prompt}], "stream": stream}
            reply = client.post("/v1/chat/completions", json=body)
            assert reply.status_code == 400
            error = reply.json()["error"]
            assert error["code"] == "generation_refused"
            assert "context window" in error["message"]
        reply = client.post("/v1/embeddings", json={"input": long_prompt})
        assert reply.status_code == 400
        assert reply.json()["error"]["code"] == "generation_refused"
        completion = client.post("/v1/chat/completions", json=CHAT).json()
    assert completion["choices"][0]["message"]["content"].strip()


def test_capabilities_show_the_loaded_model(gemma_backend: RunningBackend) -> None:
    with gemma_backend.client() as client:
        client.post("/v1/chat/completions", json=CHAT)
        model = client.get("/api/capabilities").json()["model"]
    assert model["id"] == "gemma-3-270m-q4_k_m.gguf"
    assert model["loaded"] is True


def test_a_corrupt_gguf_is_a_422_and_the_server_stays_up(
    start_backend: Callable[..., RunningBackend], gemma_model: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.gguf"
    with gemma_model.open("rb") as source:
        truncated.write_bytes(source.read(1 << 20))
    backend = start_backend(LLAMASHIP_MODEL=str(truncated))
    with backend.client() as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 422
        error = reply.json()["error"]
        assert error["code"] == "model_load_failed"
        assert str(truncated) in error["message"]
        assert "LLAMASHIP_MODEL" in error["message"]
        assert client.get("/api/health").json() == {"status": "ok"}
