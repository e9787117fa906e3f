"""Request bodies of the OpenAI-compatible and admin endpoints (validated strictly)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

# Strict: "5" is not a number and 1 is not a string; unknown OpenAI fields are ignored
# so that stock OpenAI clients (which send `n`, `user`, `stream_options`...) work.
_STRICT = ConfigDict(strict=True, extra="ignore")


def _check_text_or_texts(value: object) -> object:
    """One error for the field instead of one per union member (`str`, `list[str]`)."""
    texts = value if isinstance(value, list) else [value]
    if not all(isinstance(text, str) for text in texts):
        raise PydanticCustomError("text_or_texts", "must be a string or a list of strings")
    return value


def _check_not_empty(value: str | list[str]) -> str | list[str]:
    if not value or any(not text for text in ([value] if isinstance(value, str) else value)):
        raise PydanticCustomError("empty_text", "must not be empty (nor hold an empty string)")
    return value


TextOrTexts = Annotated[str | list[str], BeforeValidator(_check_text_or_texts)]


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = _STRICT

    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`."""

    model_config = _STRICT

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    stop: TextOrTexts | None = None
    stream: bool = False
    seed: int | None = None


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings`."""

    model_config = _STRICT

    input: Annotated[TextOrTexts, AfterValidator(_check_not_empty)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class BenchmarkRequest(BaseModel):
    """`POST /api/admin/benchmark`: time `n_prompt` prompt tokens (pp) and `n_gen` generated
    tokens (tg) with the active plan and, if `cpu` and the plan offloads, on CPU only."""

    model_config = ConfigDict(strict=True, extra="forbid")

    n_prompt: int = Field(default=512, ge=1, le=8192)
    n_gen: int = Field(default=128, ge=2, le=4096)
    cpu: bool = True
