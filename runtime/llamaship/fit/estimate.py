"""An estimate of a model's memory from its GGUF metadata: for when `llama-fit-params` cannot fit.

Weights are the tensors' own sizes, per block. The KV cache follows llama.cpp's rules: f16 K and
V, the context padded to 256 cells; sliding-window layers hold only `n_swa + n_ubatch` cells
when the SWA cache is not full-size (llama-cpp-python asks for full-size: llama.cpp's default).
The compute buffer is a reserve for llama-cpp-python's settings (micro-batch 512, no flash
attention): the larger of the logits phase and the attention phase (scores and mask).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaship.fit.errors import FitError
from llamaship.fit.gguf_meta import Skipped, read_meta

KV_CELL_PAD = 256
N_UBATCH = 512
F16_BYTES = 2
F32_BYTES = 4
# Architectures whose sliding-window layout is built into llama.cpp (`load_swa_pattern(n)`):
# layer il uses the window unless il % n == n - 1. A GGUF key can override it.
_SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "llama4": 4}
_BLOCK = re.compile(r"^blk\.(\d+)\.")
_OUTPUT_TENSORS = ("output.weight", "output_norm.weight", "output_norm.bias", "output.bias")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a GGUF: sizes of weights per block and attention shape."""

    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_vocab: int
    n_ctx_train: int
    block_bytes: tuple[int, ...]
    input_bytes: int
    output_bytes: int
    token_embd_bytes: int
    tied_output: bool
    kv_width: tuple[int, ...]  # per layer: K plus V elements per cell
    swa_layers: tuple[bool, ...]
    n_swa: int

    @property
    def weight_bytes(self) -> int:
        """All weights as llama.cpp loads them (a tied output is not stored twice)."""
        return sum(self.block_bytes) + self.input_bytes + self.output_bytes

    @property
    def gpu_output_bytes(self) -> int:
        """The output layer on a GPU: a tied output is a copy of the token embedding there."""
        return self.output_bytes + (self.token_embd_bytes if self.tied_output else 0)

    def kv_cells(self, n_ctx: int, swa: bool, swa_full: bool = True) -> int:
        """Cells of one layer's KV cache for a context of `n_ctx` tokens."""
        full = -(-max(n_ctx, 1) // KV_CELL_PAD) * KV_CELL_PAD
        if swa_full or not swa or self.n_swa <= 0:
            return full
        window = min(full, self.n_swa + N_UBATCH)
        return -(-window // KV_CELL_PAD) * KV_CELL_PAD

    def layer_kv_bytes(self, n_ctx: int, swa_full: bool = True) -> tuple[int, ...]:
        """Bytes of each layer's f16 K and V cache."""
        return tuple(
            self.kv_cells(n_ctx, swa, swa_full) * width * F16_BYTES
            for width, swa in zip(self.kv_width, self.swa_layers, strict=True)
        )

    def kv_bytes(self, n_ctx: int, swa_full: bool = True) -> int:
        return sum(self.layer_kv_bytes(n_ctx, swa_full))

    def compute_bytes(self, n_ctx: int) -> int:
        """A reserve for the compute buffer: the logits phase or the attention phase."""
        cells = -(-max(n_ctx, 1) // KV_CELL_PAD) * KV_CELL_PAD
        logits = N_UBATCH * F32_BYTES * (self.n_vocab + 2 * self.n_embd)
        attention = N_UBATCH * F32_BYTES * (cells * (self.n_head + 1) + 6 * self.n_embd)
        return max(logits, attention)


def _field(fields: dict[str, Any], key: str) -> Any:
    value = fields.get(key)
    return None if isinstance(value, Skipped) else value


def _per_layer(value: Any, n_layer: int, default: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * n_layer
    if isinstance(value, list):
        if len(value) != n_layer:
            raise FitError(f"a per-layer key has {len(value)} values for {n_layer} layers")
        return tuple(int(item) for item in value)
    return (int(value),) * n_layer


def _swa_layers(fields: dict[str, Any], arch: str, n_layer: int) -> tuple[tuple[bool, ...], int]:
    n_swa = _field(fields, f"{arch}.attention.sliding_window")
    if not n_swa:
        return (False,) * n_layer, 0
    pattern = _field(fields, f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list):
        return tuple(bool(item) for item in pattern[:n_layer]), int(n_swa)
    period = int(pattern) if pattern else _SWA_PATTERN.get(arch, 0)
    if period <= 1:
        # Unknown layout: llama.cpp treats every layer as windowed only when told so.
        return (period == 1,) * n_layer, int(n_swa)
    return tuple(il % period < period - 1 for il in range(n_layer)), int(n_swa)


def read_shape(path: Path) -> ModelShape:
    """Read the shape of the model in the GGUF file `path`; `FitError` if it is not usable."""
    meta = read_meta(path)
    fields = meta.fields
    arch = _field(fields, "general.architecture")
    if not isinstance(arch, str):
        raise FitError(f"{path} names no general.architecture: not a llama.cpp model")
    n_layer = _field(fields, f"{arch}.block_count")
    n_embd = _field(fields, f"{arch}.embedding_length")
    n_head_raw = _field(fields, f"{arch}.attention.head_count")
    if not n_layer or not n_embd or n_head_raw is None:
        raise FitError(f"{path} lacks block_count, embedding_length or head_count for {arch}")
    n_layer, n_embd = int(n_layer), int(n_embd)
    heads = _per_layer(n_head_raw, n_layer, 0)
    heads_kv = _per_layer(_field(fields, f"{arch}.attention.head_count_kv"), n_layer, 0)
    heads_kv = tuple(kv or head for kv, head in zip(heads_kv, heads, strict=True))
    n_head = max(heads) or 1
    key_length = _field(fields, f"{arch}.attention.key_length") or n_embd // n_head
    value_length = _field(fields, f"{arch}.attention.value_length") or n_embd // n_head
    kv_width = tuple(kv * (int(key_length) + int(value_length)) for kv in heads_kv)

    block = [0] * n_layer
    input_bytes = output_bytes = 0
    token_embd = 0
    has_output = False
    for name, size in meta.tensor_bytes.items():
        match = _BLOCK.match(name)
        if match is not None and int(match.group(1)) < n_layer:
            block[int(match.group(1))] += size
        elif name in _OUTPUT_TENSORS:
            output_bytes += size
            has_output = has_output or name == "output.weight"
        else:
            input_bytes += size
            token_embd += size if name == "token_embd.weight" else 0
    tokens = fields.get("tokenizer.ggml.tokens")
    n_vocab = (
        tokens.length
        if isinstance(tokens, Skipped)
        else len(tokens)
        if isinstance(tokens, list)
        else int(_field(fields, f"{arch}.vocab_size") or 32000)
    )
    swa_layers, n_swa = _swa_layers(fields, arch, n_layer)
    return ModelShape(
        architecture=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_vocab=n_vocab,
        n_ctx_train=int(_field(fields, f"{arch}.context_length") or 0),
        block_bytes=tuple(block),
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        token_embd_bytes=token_embd,
        tied_output=not has_output,
        kv_width=kv_width,
        swa_layers=swa_layers,
        n_swa=n_swa,
    )
