"""Timed prompt evaluation (pp) and generation (tg), with llama.cpp's own counters.

Like llama-bench: after a warm-up, `n_prompt` tokens are evaluated in batches, then `n_gen`
tokens are decoded one at a time (each synchronized, as sampling would). llama.cpp's perf
counters give the time spent inside its decode calls; the rest of the wall time is this
module's overhead (`overhead_fraction`). Imports `llama_cpp` when called: only a process whose
llama.cpp build is chosen (the server after boot, a measurement child) calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING

from llamaship_contract.bench import BenchRun

if TYPE_CHECKING:
    from llama_cpp import Llama

BENCH_TEXT = "Write a short story about a lighthouse keeper who finds a message in a bottle. "
WARMUP_TOKENS = 16


def bench_context(n_prompt: int, n_gen: int) -> int:
    """The context a benchmark run needs: the prompt, the generated tokens and the warm-up."""
    return n_prompt + n_gen + WARMUP_TOKENS


def _prompt_tokens(llama: Llama, count: int) -> list[int]:
    text: list[int] = llama.tokenize(BENCH_TEXT.encode("utf-8"), add_bos=False)
    return (text * (count // len(text) + 1))[:count]


def measure(
    load: Callable[[], Llama],
    n_gpu_layers: int,
    n_prompt: int,
    n_gen: int,
    *,
    generation_seconds: float | None = None,
) -> BenchRun:
    """Load a model with `load` (offloading `n_gpu_layers`), warm it up, then time `n_prompt`
    prompt and `n_gen` generated tokens; the model is closed before returning.

    With `generation_seconds`, generation stops early once that much time was spent on it
    (after one token at least): the run then reports the tokens it generated."""
    import llama_cpp

    started = perf_counter()
    llama = load()
    load_seconds = perf_counter() - started
    try:
        tokens = _prompt_tokens(llama, max(n_prompt, n_gen, WARMUP_TOKENS))
        ctx = llama.ctx
        # Warm-up: first-use allocations and kernel loads stay out of the timing.
        llama.eval(tokens[:WARMUP_TOKENS])
        llama.eval(tokens[:1])
        llama_cpp.llama_synchronize(ctx)
        llama.reset()
        llama_cpp.llama_perf_context_reset(ctx)

        prompt_started = perf_counter()
        llama.eval(tokens[:n_prompt])
        llama_cpp.llama_synchronize(ctx)
        prompt_seconds = perf_counter() - prompt_started

        generation_started = perf_counter()
        generated = 0
        for token in tokens[:n_gen]:
            llama.eval((token,))
            llama_cpp.llama_synchronize(ctx)
            generated += 1
            spent = perf_counter() - generation_started
            if generation_seconds is not None and spent >= generation_seconds:
                break
        generation_seconds_spent = perf_counter() - generation_started

        perf = llama_cpp.llama_perf_context(ctx)
        n_ctx = llama.n_ctx()
    finally:
        llama.close()
    native_seconds = (perf.t_p_eval_ms + perf.t_eval_ms) / 1000.0
    wall = prompt_seconds + generation_seconds_spent
    return BenchRun(
        n_gpu_layers=n_gpu_layers,
        n_ctx=n_ctx,
        load_seconds=load_seconds,
        prompt_tokens=n_prompt,
        prompt_seconds=prompt_seconds,
        prompt_tokens_per_second=n_prompt / prompt_seconds,
        generated_tokens=generated,
        generation_seconds=generation_seconds_spent,
        tokens_per_second=generated / generation_seconds_spent,
        native_seconds=native_seconds,
        overhead_fraction=max(0.0, 1.0 - native_seconds / wall),
    )
