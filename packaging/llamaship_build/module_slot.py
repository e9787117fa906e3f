"""Compiled backend modules cached per recipe: `<cache>/<kind>/<key>/<module>` and `build.json`.

The key hashes the recipe number, the sdist, the build toolchain and the compile's own fields
(flags, tool versions), so another input is another slot. A slot appears complete or not at
all: it is written as `<key>.partial` and renamed into place. `build.json` records what the
module was built with and how long it took (a record, not an output: `output_pins` skips it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaship_build.llama_wheel import Pin

BUILD_RECORD = "build.json"


@dataclass(frozen=True)
class ModuleSlots:
    """Where one kind of backend module is cached: its cache folder, file name and recipe."""

    kind: str  # the cache folder: "cuda", "vulkan"
    module: str  # "libggml-cuda.so"
    recipe: int  # bumped when how the module is compiled changes, not its inputs

    def key(self, pin: Pin, toolchain_name: str, fields: Mapping[str, object]) -> str:
        """Cache key: recipe, sdist hashes, the build toolchain and the compile's own fields."""
        material = {
            "recipe": self.recipe,
            "sdist_sha256": sorted(pin.sha256),
            "version": pin.version,
            "toolchain": toolchain_name,
            **fields,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]

    def cached(self, cache: Path, key: str) -> tuple[Path, dict[str, Any]] | None:
        """The module compiled under `key` and its build record, if a complete slot has it."""
        slot = cache / self.kind / key
        if not (slot / self.module).is_file() or not (slot / BUILD_RECORD).is_file():
            return None
        return slot / self.module, json.loads((slot / BUILD_RECORD).read_text())

    def store(self, cache: Path, key: str, module: Path, record: Mapping[str, object]) -> Path:
        """Copy `module` and its build record into the slot of `key`; returns the slot's module."""
        slot = cache / self.kind / key
        partial = slot.with_name(slot.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shutil.copyfile(module, partial / self.module)
        (partial / self.module).chmod(0o755)
        (partial / BUILD_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(slot, ignore_errors=True)
        os.replace(partial, slot)
        return slot / self.module
