"""The GPU memory fit: the load plan handed to `Llama(...)` and the fit cache's file.

A `FitPlan` says how a model is placed: layers offloaded, context, split between GPUs and
tensor overrides (llama.cpp `-ot` patterns). It says where it came from (`source`) and whether
the engine applies it (`applied` is False when the user's own settings win: the plan is advice).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaship_contract.document import Document

FIT_SCHEMA: Literal[1] = 1

FitSource = Literal["user", "fit-tool", "estimate", "cache", "cpu", "backoff"]


class DevicePlan(Document):
    """What a plan puts on one device; bytes are llama.cpp's own (MiB * 2**20) or estimated."""

    index: int = Field(ge=-1, description="GPU index (CUDA order); -1 for host memory")
    name: str = ""
    uuid: str | None = None
    layers: int | None = Field(default=None, ge=0)
    model_bytes: int | None = Field(default=None, ge=0)
    kv_bytes: int | None = Field(default=None, ge=0)
    compute_bytes: int | None = Field(default=None, ge=0)
    planned_bytes: int | None = Field(default=None, ge=0)
    free_bytes: int | None = Field(default=None, ge=0)


class FitPlan(Document):
    """How to load one model: the arguments for `Llama(...)` and where they came from."""

    schema_: Literal[1] = Field(default=FIT_SCHEMA, alias="schema")
    n_gpu_layers: int = Field(ge=-1, description="-1: all layers; 0: none (CPU only)")
    n_ctx: int = Field(ge=0, description="context in tokens; 0: the model's own")
    tensor_split: tuple[float, ...] | None = None
    main_gpu: int = Field(default=0, ge=0)
    tensor_overrides: tuple[str, ...] = Field(
        default=(), description="llama.cpp -ot patterns, e.g. 'blk\\.3\\.ffn_.*=CPU'"
    )
    source: FitSource
    reason: str
    applied: bool = True
    margin_mb: int = Field(default=0, ge=0)
    n_layers: int | None = Field(default=None, ge=0, description="layers the model has")
    devices: tuple[DevicePlan, ...] = ()
    fit_seconds: float | None = Field(default=None, ge=0)

    @property
    def gpu_offload(self) -> bool:
        """Whether the plan puts any layer on a GPU."""
        return self.n_gpu_layers != 0


class FitCacheKey(Document):
    """Everything a fit depends on: a change in any field makes a cached plan stale."""

    gpu_uuids: tuple[str, ...]
    gpu_vram_total_mb: tuple[int, ...] = ()
    driver_version: str | None
    variant: str
    overlay_version: str | None
    llama_cpp_version: str
    model_path: str
    model_size: int = Field(ge=0)
    model_mtime_ns: int
    n_ctx: int = Field(ge=0)
    margin_mb: int = Field(ge=0)


class FitCacheRecord(Document):
    """One fit-cache file: a plan that loaded, and the key it is valid for."""

    schema_: Literal[1] = Field(default=FIT_SCHEMA, alias="schema")
    key: FitCacheKey
    plan: FitPlan
