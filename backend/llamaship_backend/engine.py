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

from llamaship.fit import backoff, cache_key, llama_arguments, plan_load, remember
from llamaship.launch.outcome import BootState
from llamaship_backend import benchmark as bench
from llamaship_backend.errors import (
    GenerationRefused,
    ModelFileMissing,
    ModelLoadFailed,
    ModelNotConfigured,
    NotAGguf,
)
from llamaship_backend.schemas import ChatCompletionRequest
from llamaship_contract.bench import BenchRecord
from llamaship_contract.document import parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.fit import FitPlan

if TYPE_CHECKING:
    from llama_cpp import Llama

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# A GGUF without a chat template (base models, older conversions) would get llama-cpp-python's
# "llama-2" prompt format, which models of other families answer with nothing at all.
CHAT_FORMAT_BY_ARCHITECTURE = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma"}


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


class _OutOfMemory(Exception):
    """A load failed for lack of memory (llama.cpp's log said so); the message is the cause."""


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
        self._plan: FitPlan | None = None
        self._shape: tuple[int, int] | None = None
        self._model: Path | None = state.settings.model

    @property
    def model(self) -> Path | None:
        """The model file this process serves: the configured one, or the last `switch_to`."""
        return self._model

    @property
    def model_id(self) -> str | None:
        """The name clients see for the served model (its file name)."""
        return self._model.name if self._model is not None else None

    def switch_to(self, path: Path) -> None:
        """Serve `path` from now on, without a restart: the models in memory are freed and the
        new chat model is loaded (and its plan fitted) before this returns; when that load
        fails, the model served before stays and the error is raised."""
        with self._lock:
            validate_model_file(path)
            before = (self._model, self._plan, self._shape)
            self._close_models()
            self._model, self._plan, self._shape = path, None, None
            try:
                self._chat_model()
            except BaseException:
                self._close_models()
                self._model, self._plan, self._shape = before
                raise
        logger.info("now serving %s", path)

    @property
    def loaded(self) -> bool:
        return self._chat_llama is not None or self._embedding_llama is not None

    @property
    def plan(self) -> FitPlan | None:
        """The plan the chat model loaded with (after any back-off), or None before a load."""
        return self._plan

    def _first_plan(self, path: Path) -> FitPlan:
        """The fit plan, or one step below the plan an earlier launch died loading."""
        settings, state = self._state.settings, self._state
        plan = plan_load(
            settings,
            state.report,
            state.active_variant,
            path,
            settings.n_ctx,
            overlay_version=state.overlay_version,
            llama_cpp_version=state.llama_cpp_version,
        )
        if not plan.applied:  # the user's values win: back off from those
            plan = plan.model_copy(
                update={"n_gpu_layers": settings.n_gpu_layers or 0, "n_ctx": settings.n_ctx}
            )
        failure = state.previous_load_failure(path)
        if failure is None or failure.plan is None:
            return plan
        try:
            died = parse_document(FitPlan, failure.plan, "the plan of the launch that died")
        except ContractError as error:
            logger.warning("%s", error)
            return plan
        reduced = next(backoff.reduced_plans(died, *self._model_shape(path, died)), None)
        if reduced is None:
            return plan
        reason = (
            f"the launch of pid {failure.pid} died while loading {path.name} with "
            f"{backoff.describe(died)}; starting from {backoff.describe(reduced)}"
        )
        logger.warning("%s", reason)
        self._state.events.append(reason)
        return reduced.model_copy(update={"reason": reason})

    def _model_shape(self, path: Path, plan: FitPlan) -> tuple[int, int]:
        """(training context, layers) of the model, read from its metadata (vocab only)."""
        if self._shape is None:
            from llama_cpp import Llama

            info = Llama(model_path=str(path), vocab_only=True, verbose=False)
            try:
                architecture = info.metadata.get("general.architecture", "")
                n_ctx_train = int(info.metadata.get(f"{architecture}.context_length", 0))
                n_layers = int(info.metadata.get(f"{architecture}.block_count", 0))
            finally:
                info.close()
            self._shape = (n_ctx_train, plan.n_layers or n_layers)
        return self._shape

    def _open(self, path: Path, plan: FitPlan, **extra: Any) -> Llama:
        """One `Llama(...)` with `plan`; raises llama-cpp-python's ValueError on failure."""
        from llama_cpp import Llama

        if plan.tensor_overrides and plan.applied:
            logger.warning(
                "llama-cpp-python cannot apply tensor overrides %s: loading without them",
                list(plan.tensor_overrides),
            )
        settings = self._state.settings
        return Llama(
            model_path=str(path),
            n_threads=self._state.n_threads,
            verbose=settings.verbose,
            **llama_arguments(plan, settings),
            **extra,
        )

    def _remember(self, path: Path, plan: FitPlan) -> None:
        """Keep a GPU plan that loaded in the fit cache: the next launch skips the fit."""
        state = self._state
        if state.active_variant != "cuda" or plan.source in ("cache", "cpu") or not plan.applied:
            return
        key = cache_key(
            state.report,
            state.active_variant,
            path,
            state.settings.n_ctx,
            margin_mb=state.settings.vram_margin_mb,
            overlay_version=state.overlay_version,
            llama_cpp_version=state.llama_cpp_version,
        )
        remember(plan, key, state.settings.home)

    def _load(self, *, embedding: bool) -> Llama:
        path = validate_model_file(self._model)
        from llamaship.native import load_ggml_backends

        load_ggml_backends()
        backoff.LlamaLog.verbose = self._state.settings.verbose
        backoff.LlamaLog.install()
        if self._plan is None:
            self._plan = self._first_plan(path)
        plan = self._plan
        extra: dict[str, Any] = {}
        if embedding:
            # A whole input must fit in one batch for embeddings.
            n_ctx = llama_arguments(plan, self._state.settings)["n_ctx"]
            extra = {"embedding": True, "n_batch": n_ctx, "n_ubatch": n_ctx}
        steps: Iterator[FitPlan] | None = None
        while True:
            started = perf_counter()
            try:
                llama = self._open_marked(path, plan, extra)
            except _OutOfMemory as error:
                if steps is None:
                    steps = backoff.reduced_plans(plan, *self._model_shape(path, plan))
                reduced = next(steps, None)
                if reduced is None:
                    msg = (
                        f"llama.cpp {self._state.llama_cpp_version} ran out of memory loading "
                        f"{path} even with {backoff.describe(plan)} ({error}): choose a "
                        "smaller model or lower LLAMASHIP_N_CTX."
                    )
                    raise ModelLoadFailed(msg) from None
                event = (
                    f"out of memory loading {path.name} with {backoff.describe(plan)} "
                    f"({error}); retrying with {backoff.describe(reduced)}"
                )
                logger.warning("%s", event)
                self._state.events.append(event)
                plan = reduced
                continue
            break
        logger.info(
            "loaded %s%s in %.2f s (%s, n_threads=%d; %s: %s)",
            path.name,
            " for embeddings" if embedding else "",
            perf_counter() - started,
            backoff.describe(plan),
            self._state.n_threads,
            plan.source,
            plan.reason,
        )
        if not embedding:
            self._remember(path, plan)
        self._plan = plan
        return llama

    def _open_marked(self, path: Path, plan: FitPlan, extra: dict[str, Any]) -> Llama:
        """`_open` with llama.cpp's log captured, inside the launch's `loading` phase (a crash
        there is counted, with the plan, and the next launch starts lower)."""
        with backoff.LlamaLog.captured() as lines:
            try:
                with self._state.health.loading(path, plan.model_dump(mode="json", by_alias=True)):
                    return self._open(path, plan, **extra)
            except (ValueError, RuntimeError) as error:
                failure: Exception = error
        if backoff.is_out_of_memory(str(failure), lines):
            raise _OutOfMemory("; ".join(backoff.memory_lines(lines)) or str(failure))
        detail = "; ".join(line for line in lines[-3:]) or "no log"
        msg = (
            f"llama.cpp {self._state.llama_cpp_version} could not load {path} ({failure}; "
            f"llama.cpp said: {detail}). If the file is truncated or of an architecture this "
            "llama.cpp does not know, download it again or set LLAMASHIP_MODEL to another "
            ".gguf file."
        )
        raise ModelLoadFailed(msg) from None

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
        self._state.health.generated()
        return cast("dict[str, Any]", completion)  # a chat.completion when stream=False

    def stream_chat(self, request: ChatCompletionRequest) -> Generator[dict[str, Any], None, None]:
        """OpenAI `chat.completion.chunk` objects; the lock is held until the stream ends or closes.

        Nothing runs before the first `next()`: model errors surface there.
        """
        with self._lock, _refusals_as_errors():
            llama = self._chat_model()
            chunks = llama.create_chat_completion(**self._chat_arguments(request), stream=True)
            for chunk in cast("Iterator[dict[str, Any]]", chunks):  # chunks when stream=True
                self._state.health.generated()
                yield chunk

    def embed(self, texts: list[str]) -> Embeddings:
        """One unit-length vector per text (the mean token vector if the model does not pool)."""
        with self._lock, _refusals_as_errors():
            llama = self._embedding_model()
            rows, prompt_tokens = llama.embed(texts, truncate=False, return_count=True)
        self._state.health.generated()
        return Embeddings([unit_vector(row) for row in rows], int(prompt_tokens))

    def benchmark(self, n_prompt: int, n_gen: int, *, cpu: bool = True) -> BenchRecord:
        """Load time, prompt and generation tokens/s with the active plan and (if it offloads
        and `cpu`) CPU only, same build; stored under LLAMASHIP_HOME. Both models are freed
        first: the benchmark needs the memory they hold (the next request loads them again)."""
        with self._lock:
            path = validate_model_file(self._model)
            if self._plan is None:
                self._chat_model()  # settle the plan (fit, cache, back-off) as a request would
            self._close_models()
            assert self._plan is not None
            plan = self._plan.model_copy(
                update={"n_ctx": bench.bench_context(n_prompt, n_gen), "applied": True}
            )
            cpu_plan = plan.model_copy(update={"n_gpu_layers": 0, "tensor_split": None})
            with _refusals_as_errors():
                active = bench.measure(
                    lambda: self._open(path, plan), plan.n_gpu_layers, n_prompt, n_gen
                )
                cpu_run = (
                    bench.measure(lambda: self._open(path, cpu_plan), 0, n_prompt, n_gen)
                    if cpu and plan.gpu_offload
                    else None
                )
            record = bench.benchmark_record(self._state, path, self._plan, active, cpu_run)
            bench.save_record(self._state.dirs.state, record)
        logger.info(
            "benchmark of %s: %s (pp%d %.1f tokens/s, overhead %.2f %%)",
            path.name,
            record.summary,
            n_prompt,
            active.prompt_tokens_per_second,
            100 * active.overhead_fraction,
        )
        return record

    def _close_models(self) -> None:
        for llama in (self._chat_llama, self._embedding_llama):
            if llama is not None:
                llama.close()
        self._chat_llama = None
        self._embedding_llama = None

    def close(self) -> None:
        """Free both models (the next request loads them again)."""
        with self._lock:
            self._close_models()
