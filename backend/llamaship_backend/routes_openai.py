"""OpenAI-compatible API: `/v1/models`, `/v1/chat/completions` (+ streaming), `/v1/embeddings`."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Generator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from llamaship_backend.dependencies import get_engine
from llamaship_backend.engine import Engine
from llamaship_backend.error_replies import ERROR_RESPONSES
from llamaship_backend.schemas import ChatCompletionRequest, EmbeddingRequest

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/v1/models")
def list_models(engine: Annotated[Engine, Depends(get_engine)]) -> dict[str, Any]:
    """The served model, without loading it (an empty list when none is configured)."""
    model = engine.model
    data = []
    if model is not None:
        created = int(model.stat().st_mtime) if model.is_file() else 0
        data.append(
            {"id": model.name, "object": "model", "created": created, "owned_by": "llamaship"}
        )
    return {"object": "list", "data": data}


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _server_sent_events(
    first: dict[str, Any] | None, chunks: Generator[dict[str, Any], None, None]
) -> AsyncIterator[str]:
    """`first`, then the rest of `chunks`, then `data: [DONE]`; closing the stream early
    (the client went away) closes `chunks`, which frees the engine for the next request."""
    try:
        chunk = first
        while chunk is not None:
            yield _event(chunk)
            chunk = await run_in_threadpool(next, chunks, None)
        yield "data: [DONE]\n\n"
    finally:
        chunks.close()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, engine: Annotated[Engine, Depends(get_engine)]
) -> dict[str, Any] | StreamingResponse:
    if not body.stream:
        return await run_in_threadpool(engine.chat, body)
    chunks = engine.stream_chat(body)
    # The first chunk comes after the model loaded and read the prompt: errors up to there
    # become a proper JSON error reply instead of a broken stream.
    first = await run_in_threadpool(next, chunks, None)
    return StreamingResponse(
        _server_sent_events(first, chunks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


@router.post("/v1/embeddings")
def embeddings(
    body: EmbeddingRequest, engine: Annotated[Engine, Depends(get_engine)]
) -> dict[str, Any]:
    result = engine.embed(body.texts())
    data = [
        {"object": "embedding", "index": index, "embedding": _encode(vector, body.encoding_format)}
        for index, vector in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return {"object": "list", "data": data, "model": engine.model_id, "usage": usage}
