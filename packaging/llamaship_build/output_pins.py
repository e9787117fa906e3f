"""Cached build outputs checked against sha256s committed to the repository.

The release builds reuse what the build cache holds: the compiled llama-cpp-python wheel
(`wheelhouse/<flavour>-<recipe key>/`), the fit tool (`fit-tool/llama-fit-params-<recipe
key>/`), the CUDA backend module (`cuda/<recipe key>/libggml-cuda.so`) and NVIDIA's wheels
(`nvidia-wheels/`: the runtime the overlay ships and the compiler it is built with). A cache
can be poisoned, and a hash kept in the same cache proves nothing, so before anything is
signed every such file is checked against the repository:

- compiled outputs against `requirements/build-outputs.json`: `{"outputs": {"<cache-relative
  path>": "<sha256>"}}`. The slot folder's name is the hash of its recipe (sources, flags,
  toolchain), and the compiles are reproducible, so a recipe has one known output, recorded
  like a lock (`record`, after `nox -s repro -- --compile` agreed);
- NVIDIA's wheels against the hashes of `requirements/gpu.txt` and
  `requirements/cuda-toolkit.txt`.

A slot's `build.json` (what it was built with, and how long it took) is a record, not an
output: nothing is built from it.

`python -m llamaship_build.output_pins check|record [--cache DIR]`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.project import Project, cache_dir
from llamaship_contract.hashing import sha256_of

PINS_FILE = "build-outputs.json"
# Cache folders whose files are compiled here: one slot folder per recipe below each.
COMPILED = ("wheelhouse", "fit-tool", "cuda")
NVIDIA_WHEELS = "nvidia-wheels"
# The locks whose hashes NVIDIA's wheels in the cache may have.
NVIDIA_LOCKS = ("gpu.txt", "cuda-toolkit.txt")
_RECORDS = ("build.json",)
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
# Bookkeeping next to the outputs, not outputs: file locks and unfinished copies.
_SKIPPED_SUFFIXES = (".lock", ".partial")


class UnpinnedOutput(BuildError):
    """A cached build output differs from, or is missing in, the committed pins."""


def compiled_outputs(cache: Path) -> dict[str, str]:
    """Cache-relative path (POSIX) -> sha256 of every compiled output in `cache`."""
    found: dict[str, str] = {}
    for folder in COMPILED:
        root = cache / folder
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if (
                path.is_file()
                and not path.name.endswith(_SKIPPED_SUFFIXES)
                and path.name not in _RECORDS
            ):
                if any(part.endswith(".partial") for part in path.relative_to(root).parts):
                    continue
                found[path.relative_to(cache).as_posix()] = sha256_of(path)
    return found


def lock_hashes(lock: Path) -> frozenset[str]:
    """Every sha256 a hash lock allows."""
    return frozenset(_HASH.findall(lock.read_text(encoding="utf-8")))


def load_pins(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        outputs = json.loads(path.read_text(encoding="utf-8"))["outputs"]
        return {str(name): str(digest) for name, digest in dict(outputs).items()}
    except (ValueError, KeyError, TypeError) as error:
        msg = f'{path} must be {{"outputs": {{"<cache path>": "<sha256>"}}}} ({error})'
        raise BuildError(msg) from None


def problems(
    cache: Path, pins: Mapping[str, str], nvidia_allowed: frozenset[str] | None
) -> list[str]:
    """What in `cache` is not what the repository pins: one line per file."""
    found = []
    for name, digest in compiled_outputs(cache).items():
        pinned = pins.get(name)
        if pinned is None:
            found.append(f"{name} ({digest}) is not pinned")
        elif pinned != digest:
            found.append(f"{name} is {digest}, the repository pins {pinned}")
    wheels = cache / NVIDIA_WHEELS
    if nvidia_allowed is not None and wheels.is_dir():
        for wheel in sorted(wheels.glob("*.whl")):
            if sha256_of(wheel) not in nvidia_allowed:
                found.append(
                    f"{NVIDIA_WHEELS}/{wheel.name} has no hash in requirements/"
                    f"{' or '.join(NVIDIA_LOCKS)}"
                )
    return found


def check(cache: Path, requirements: Path) -> int:
    """Raise unless every cached output matches the repository; returns how many were checked."""
    locks = [requirements / name for name in NVIDIA_LOCKS if (requirements / name).is_file()]
    allowed = frozenset().union(*map(lock_hashes, locks)) if locks else None
    wrong = problems(cache, load_pins(requirements / PINS_FILE), allowed)
    if wrong:
        msg = (
            f"cached build outputs in {cache} do not match the repository:\n  "
            + "\n  ".join(wrong)
            + f"\nempty the cache, or, for a new recipe whose two compiles agree (`nox -s repro "
            f"-- --compile`), record it with `nox -s check_outputs -- record` and commit "
            f"requirements/{PINS_FILE}"
        )
        raise UnpinnedOutput(msg)
    checked = len(compiled_outputs(cache))
    if (cache / NVIDIA_WHEELS).is_dir():
        checked += len(list((cache / NVIDIA_WHEELS).glob("*.whl")))
    return checked


def record(cache: Path, requirements: Path) -> Path:
    """Add this cache's compiled outputs to the pins file (a maintainer's step, reviewed)."""
    path = requirements / PINS_FILE
    pins = {**load_pins(path), **compiled_outputs(cache)}
    text = json.dumps({"outputs": dict(sorted(pins.items()))}, indent=2) + "\n"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llamaship_build.output_pins")
    parser.add_argument("action", choices=("check", "record"))
    parser.add_argument("--cache", type=Path, help="the build cache (default: this machine's)")
    args = parser.parse_args(argv)
    cache = args.cache or cache_dir()
    requirements = Project.here().requirements
    try:
        if args.action == "record":
            print(record(cache, requirements))
        else:
            print(f"{check(cache, requirements)} cached build outputs match the repository")
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
