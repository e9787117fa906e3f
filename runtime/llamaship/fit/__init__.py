"""GPU memory fit: how many layers, how much context and which GPUs a model load gets.

`plan_load` is what the engine calls before `Llama(...)`: the fit cache first, then llama.cpp's
own `llama-fit-params` in a subprocess, then an estimate from the GGUF's metadata.
`llama_arguments` turns a plan into `Llama(...)` keyword arguments; `remember` keeps a plan
that loaded, `forget` drops one that did not. The planner sees `FitDevice`s of any backend;
`devices_for` makes them from the detection report.
"""

from __future__ import annotations

from llamaship.fit.cache import cache_key, forget, lookup, remember
from llamaship.fit.devices import FitDevice, devices_for, nvidia_devices
from llamaship.fit.errors import FitError, FitToolError
from llamaship.fit.plan import llama_arguments, plan_load

__all__ = [
    "FitDevice",
    "FitError",
    "FitToolError",
    "cache_key",
    "devices_for",
    "forget",
    "llama_arguments",
    "lookup",
    "nvidia_devices",
    "plan_load",
    "remember",
]
