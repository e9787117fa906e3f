"""Generated llama-architecture GGUF files of any shape (the PyPI `gguf` writer).

Tests and the fit-accuracy bench use them: models of known shapes that load in a moment.

Weights are small random numbers (or zeros for big files): llama.cpp loads them like any
model. The vocabulary is a byte-fallback SentencePiece one written here, so no tokenizer file
is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Shape:
    """The hyperparameters of a generated model."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 128
    n_vocab: int = 512
    n_ctx_train: int = 4096
    tied_output: bool = False
    weight_type: str = "F16"  # F16, F32 or Q8_0
    zeros: bool = False

    @property
    def name(self) -> str:
        tied = "-tied" if self.tied_output else ""
        return (
            f"llama-l{self.n_layer}-e{self.n_embd}-h{self.n_head}-kv{self.n_head_kv}"
            f"-ff{self.n_ff}-v{self.n_vocab}-{self.weight_type}{tied}"
        )


def _vocabulary(n_vocab: int) -> tuple[list[bytes], list[float], list[int]]:
    import gguf

    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{byte:02X}>".encode() for byte in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    index = 0
    while len(tokens) < n_vocab:
        word = ""
        rest = index
        while True:
            word += letters[rest % 26]
            rest //= 26
            if rest == 0:
                break
        tokens.append(("\u2581" + word).encode())
        types.append(gguf.TokenType.NORMAL)
        index += 1
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(tokens) - 259)]
    return tokens[:n_vocab], scores[:n_vocab], [int(kind) for kind in types[:n_vocab]]


def write_llama_gguf(path: Path, shape: Shape, seed: int = 0) -> Path:
    """Write a llama-architecture GGUF of `shape` to `path`."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(shape.name)
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7}[shape.weight_type])
    tokens, scores, types = _vocabulary(shape.n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def matrix(rows: int, columns: int) -> tuple[np.ndarray, gguf.GGMLQuantizationType | None]:
        values = (
            np.zeros((rows, columns), dtype=np.float32)
            if shape.zeros
            else rng.standard_normal((rows, columns), dtype=np.float32) * 0.02
        )
        if shape.weight_type == "F32":
            return values, None
        if shape.weight_type == "F16":
            return values.astype(np.float16), None
        kind = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(values, kind), kind

    def add(name: str, rows: int, columns: int) -> None:
        data, kind = matrix(rows, columns)
        writer.add_tensor(name, data, raw_dtype=kind)

    head_dim = shape.n_embd // shape.n_head
    norm = np.ones(shape.n_embd, dtype=np.float32)
    add("token_embd.weight", shape.n_vocab, shape.n_embd)
    for layer in range(shape.n_layer):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", norm)
        add(f"{prefix}.attn_q.weight", shape.n_head * head_dim, shape.n_embd)
        add(f"{prefix}.attn_k.weight", shape.n_head_kv * head_dim, shape.n_embd)
        add(f"{prefix}.attn_v.weight", shape.n_head_kv * head_dim, shape.n_embd)
        add(f"{prefix}.attn_output.weight", shape.n_embd, shape.n_head * head_dim)
        writer.add_tensor(f"{prefix}.ffn_norm.weight", norm)
        add(f"{prefix}.ffn_gate.weight", shape.n_ff, shape.n_embd)
        add(f"{prefix}.ffn_up.weight", shape.n_ff, shape.n_embd)
        add(f"{prefix}.ffn_down.weight", shape.n_embd, shape.n_ff)
    writer.add_tensor("output_norm.weight", norm)
    if not shape.tied_output:
        add("output.weight", shape.n_vocab, shape.n_embd)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
