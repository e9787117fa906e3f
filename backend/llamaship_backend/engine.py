"""The llama.cpp models behind the API: validated and loaded on first use, used one call at a time.

`llama_cpp` is imported inside functions only: the bootstrap must choose which `llama_cpp`
(bundled CPU build or CUDA overlay) wins the import before anything imports it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from llamaship.boot_state import BootState

from llamaship_backend.errors import (
    GenerationRefused,
    ModelFileMissing,
    ModelLoadFailed,
    ModelNotConfigured,
    NotAGguf,
)
from llamaship_backend.schemas import ChatCompletionRequest

if TYPE_CHECKING:
    from llama_cpp import Llama

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# A GGUF without a chat template (base models, older conversions) would get llama-cpp-python's
# "llama-2" prompt format, which models of other families answer with nothing at all.
CHAT_FORMAT_BY_ARCHITECTURE = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma"}
BENCHMARK_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def validate_model_file(path: Path | None) -> Path:
    """Return `path` if it names a GGUF file, else raise the error that says how to fix it."""
    if path is None:
        msg = "No model is configured: set LLAMASHIP_MODEL (or pass --model) to a .gguf file."
        raise ModelNotConfigured(msg)
    if not path.exists():
        msg = (
            f"The model file {path} does not exist: check LLAMASHIP_MODEL (or --model), "
            "or download the model again."
        )
        raise ModelFileMissing(msg)
    if path.is_dir():
        msg = f"The model path {path} is a directory: set LLAMASHIP_MODEL to the .gguf file in it."
        raise NotAGguf(msg)
    try:
        with path.open("rb") as model_file:
            magic = model_file.read(len(GGUF_MAGIC))
    except OSError as error:
        msg = f"The model file {path} cannot be read ({error.strerror}): check its permissions."
        raise ModelLoadFailed(msg) from None
    if magic != GGUF_MAGIC:
        msg = (
            f"The model file {path} is not a GGUF file (it starts with {magic!r}, "
            f"not {GGUF_MAGIC!r}): "
            "llama.cpp needs a .gguf model; convert it or set LLAMASHIP_MODEL to a .gguf file."
        )
        raise NotAGguf(msg)
    return path


@dataclass(frozen=True)
class Embeddings:
    """One unit-length vector per input text, and how many tokens the inputs took."""

    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True)
class BenchmarkResult:
    """A timed greedy generation; speeds are per second of wall time."""

    model: str
    prompt_tokens: int
    generated_tokens: int
    prompt_seconds: float
    generation_seconds: float
    prompt_tokens_per_second: float
    tokens_per_second: float


def unit_vector(embedding: list[float] | list[list[float]]) -> list[float]:
    """One vector of length 1: token vectors (a model without pooling) are averaged first."""
    if embedding and isinstance(embedding[0], list):
        vector = [sum(column) / len(embedding) for column in zip(*embedding, strict=True)]
    else:
        vector = cast(list[float], embedding)
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm > 0.0 else vector


@contextmanager
def _refusals_as_errors() -> Iterator[None]:
    """llama-cpp-python reports bad input (too many tokens...) as ValueError."""
    try:
        yield
    except ValueError as error:
        raise GenerationRefused(f"llama.cpp refused the request: {error}") from None


class Engine:
    """Owns the chat model and, on first embedding request, a second instance for embeddings.

    llama.cpp contexts are not thread-safe: one lock serializes loading and every call.
    """

    def __init__(self, state: BootState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._chat_llama: Llama | None = None
        self._embedding_llama: Llama | None = None

    @property
    def model_id(self) -> str | None:
        """The name clients see for the configured model (its file name)."""
        model = self._state.settings.model
        return model.name if model is not None else None

    @property
    def loaded(self) -> bool:
        return self._chat_llama is not None or self._embedding_llama is not None

    def _load(self, *, embedding: bool) -> Llama:
        path = validate_model_file(self._state.settings.model)
        from llamaship.native import load_ggml_backends

        load_ggml_backends()
        from llama_cpp import Llama

        settings = self._state.settings
        extra: dict[str, Any] = {}
        if embedding:
            # A whole input must fit in one batch for embeddings.
            extra = {"embedding": True, "n_batch": settings.n_ctx, "n_ubatch": settings.n_ctx}
        started = perf_counter()
        try:
            llama = Llama(
                model_path=str(path),
                n_gpu_layers=self._state.n_gpu_layers,
                n_threads=self._state.n_threads,
                n_ctx=settings.n_ctx,
                verbose=settings.verbose,
                **extra,
            )
        except (ValueError, RuntimeError) as error:
            msg = (
                f"llama.cpp {self._state.llama_cpp_version} could not load {path} ({error}). "
                "If the file is truncated or of an architecture this llama.cpp does not know, "
                "download it again or set LLAMASHIP_MODEL to another .gguf file; if memory ran "
                "out, lower LLAMASHIP_N_CTX."
            )
            raise ModelLoadFailed(msg) from None
        logger.info(
            "loaded %s%s in %.2f s (n_gpu_layers=%d, n_threads=%d, n_ctx=%d)",
            path.name, " for embeddings" if embedding else "", perf_counter() - started,
            self._state.n_gpu_layers, self._state.n_threads, settings.n_ctx,
        )
        return llama

    def _chat_model(self) -> Llama:
        """The chat model, loaded on first use; call with the lock held."""
        if self._chat_llama is None:
            llama = self._load(embedding=False)
            if "tokenizer.chat_template" not in llama.metadata:
                architecture = llama.metadata.get("general.architecture", "")
                llama.chat_format = CHAT_FORMAT_BY_ARCHITECTURE.get(architecture, llama.chat_format)
            self._chat_llama = llama
        return self._chat_llama

    def _embedding_model(self) -> Llama:
        """The embedding instance, loaded on first use; call with the lock held."""
        if self._embedding_llama is None:
            self._embedding_llama = self._load(embedding=True)
        return self._embedding_llama

    def _chat_arguments(self, request: ChatCompletionRequest) -> dict[str, Any]:
        return {
            "messages": [message.model_dump() for message in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop if request.stop is not None else [],
            "seed": request.seed,
            "model": self.model_id,
        }

    def chat(self, request: ChatCompletionRequest) -> dict[str, Any]:
        """An OpenAI `chat.completion` object."""
        with self._lock, _refusals_as_errors():
            llama = self._chat_model()
            completion = llama.create_chat_completion(**self._chat_arguments(request))
        return cast("dict[str, Any]", completion)  # a chat.completion when stream=False

    def stream_chat(
        self, request: ChatCompletionRequest
    ) -> Generator[dict[str, Any], None, None]:
        """OpenAI `chat.completion.chunk` objects; the lock is held until the stream ends or closes.

        Nothing runs before the first `next()`: model errors surface there.
        """
        with self._lock, _refusals_as_errors():
            llama = self._chat_model()
            chunks = llama.create_chat_completion(**self._chat_arguments(request), stream=True)
            yield from cast("Iterator[dict[str, Any]]", chunks)  # chunks when stream=True

    def embed(self, texts: list[str]) -> Embeddings:
        """One unit-length vector per text (the mean token vector if the model does not pool)."""
        with self._lock, _refusals_as_errors():
            llama = self._embedding_model()
            rows, prompt_tokens = llama.embed(texts, truncate=False, return_count=True)
        return Embeddings([unit_vector(row) for row in rows], int(prompt_tokens))

    def benchmark(self, n_tokens: int) -> BenchmarkResult:
        """Greedy generation of exactly `n_tokens` tokens after a fixed prompt, timed."""
        with self._lock, _refusals_as_errors():
            llama = self._chat_model()
            prompt = llama.tokenize(BENCHMARK_PROMPT.encode("utf-8"))
            if len(prompt) + n_tokens > llama.n_ctx():
                msg = (
                    f"{n_tokens} tokens after the {len(prompt)}-token benchmark prompt do not fit "
                    f"the context of {llama.n_ctx()} tokens: ask for fewer or raise "
                    "LLAMASHIP_N_CTX."
                )
                raise GenerationRefused(msg)
            # No reuse of a cached prompt: its evaluation is part of the timing.
            llama.reset()  # type: ignore[no-untyped-call]  # llama-cpp-python leaves it untyped
            started = perf_counter()
            first_token_at = started
            generated = 0
            for _token in llama.generate(prompt, temp=0.0):
                generated += 1
                if generated == 1:
                    first_token_at = perf_counter()
                if generated == n_tokens:
                    break
            finished = perf_counter()
        # The first token costs the prompt evaluation; the others one decode step each.
        prompt_seconds = first_token_at - started
        generation_seconds = finished - first_token_at
        return BenchmarkResult(
            model=self.model_id or "",
            prompt_tokens=len(prompt),
            generated_tokens=generated,
            prompt_seconds=prompt_seconds,
            generation_seconds=generation_seconds,
            prompt_tokens_per_second=len(prompt) / prompt_seconds,
            tokens_per_second=(generated - 1) / generation_seconds,
        )

    def close(self) -> None:
        """Free both models (the next request loads them again)."""
        with self._lock:
            for llama in (self._chat_llama, self._embedding_llama):
                if llama is not None:
                    llama.close()
            self._chat_llama = None
            self._embedding_llama = None
