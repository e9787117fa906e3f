"""A fake `llama-fit-params` at the process boundary: a script printing what the real tool prints.

The outputs are copied from the tool's source (`tools/fit-params/fit-params.cpp`,
`common/fit.cpp` in llama.cpp) and its README. Each mode is one way the tool can answer.
"""

from __future__ import annotations

import sys
from pathlib import Path

_LOG_PREFIX = "llama_params_fit_impl: "

ONE_GPU_PARTIAL = (
    "-c 4096 -ngl 20\n",
    _LOG_PREFIX
    + "projected to use 9120 MiB of device memory vs. 7800 MiB of free device memory\n"
    + _LOG_PREFIX
    + "cannot fulfill margin of 1024 MiB, need to reduce device memory by 2344 MiB\n"
    + _LOG_PREFIX
    + "distributing layers across devices with overflow to next device/system "
    "memory:\n"
    + _LOG_PREFIX
    + "  - CUDA0 (NVIDIA GeForce RTX 2080):  20 layers (1 overflowing),   "
    "6700 MiB used,   1100 MiB free\n",
)
TWO_GPUS = (
    "-c 4096 -ngl 33 -ts 10,23\n",
    _LOG_PREFIX
    + "projected memory use with initial parameters [MiB]:\n"
    + _LOG_PREFIX
    + "distributing layers across devices with overflow to next device/system "
    "memory:\n"
    + _LOG_PREFIX
    + "  - CUDA0 (NVIDIA GeForce GTX 1060 6GB): 10 layers,   4600 MiB used,"
    "   1160 MiB free\n"
    + _LOG_PREFIX
    + "  - CUDA1 (NVIDIA GeForce RTX 3060): 23 layers,  10700 MiB used,"
    "   1100 MiB free\n",
)
MOE_OVERRIDES = (
    '-c 4096 -ngl 48 -ot "blk\\.14\\.ffn_(up|down|gate)_(ch|)exps=CPU,'
    'blk\\.15\\.ffn_(up|down|gate)_(ch|)exps=CPU"\n',
    _LOG_PREFIX + "projected to use 61807 MiB of device memory vs. 24077 MiB of free device "
    "memory\n"
    + _LOG_PREFIX
    + "  - CUDA0 (NVIDIA GeForce RTX 4090): 48 layers (34 overflowing),  19187 MiB "
    "used,   1199 MiB free\n",
)
# One Vulkan device (Mesa's lavapipe): its description holds parentheses of its own.
VULKAN_PARTIAL = (
    "-c 2048 -ngl 9\n",
    _LOG_PREFIX
    + "projected to use 2300 MiB of device memory vs. 1900 MiB of free device memory\n"
    + _LOG_PREFIX
    + "distributing layers across devices with overflow to next device/system "
    "memory:\n"
    + _LOG_PREFIX
    + "  - Vulkan0 (llvmpipe (LLVM 15.0.6, 256 bits)):  9 layers ( 1 overflowing),    "
    "880 MiB used,   1020 MiB free\n",
)
# What the tool says on a machine where it finds no GPU device (the CPU build, no driver).
NO_DEVICE = (
    "-c 4096 -ngl -1\n",
    _LOG_PREFIX
    + "projected to use 848 MiB of host memory vs. 24105 MiB of total host memory\n"
    + _LOG_PREFIX
    + "will leave 23257 >= 1024 MiB of system memory, no changes needed\n",
)
FAILURE = ("", "common_fit_params: failed to fit CLI arguments to free memory, exiting...\n")
GARBAGE = ("\x1b[31m<<segfault>>\x1b[0m -ngl lots\n", "")

_SCRIPT = '''#!{python}
"""Fake llama-fit-params written by llamaship's tests (tests/hardware/fake_fit_tool.py)."""
import os
import sys
import time

with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:])
              + " | GGML_VK_VISIBLE_DEVICES=" + os.environ.get("GGML_VK_VISIBLE_DEVICES", "-")
              + " | GGML_BACKEND_PATH=" + os.environ.get("GGML_BACKEND_PATH", "-")
              + " | LD_LIBRARY_PATH=" + os.environ.get("LD_LIBRARY_PATH", "") + "\\n")
if {hang!r}:
    if os.fork() == 0:
        time.sleep(3600)  # a child in the same process group, as a stuck driver call leaves
        os._exit(0)
    with open({log!r} + ".pid", "w") as pids:
        pids.write(str(os.getpid()))
    time.sleep(3600)
sys.stdout.write({stdout!r})
sys.stderr.write({stderr!r})
sys.exit({status})
'''


def write_fake_fit_tool(
    directory: Path,
    answer: tuple[str, str] = ONE_GPU_PARTIAL,
    *,
    status: int = 0,
    hang: bool = False,
) -> Path:
    """Write a fake `llama-fit-params` into `directory` that prints `answer` (stdout, stderr).

    Its command lines are appended to `directory/fit-calls.log`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "llama-fit-params"
    script.write_text(
        _SCRIPT.format(
            python=sys.executable,
            log=str(directory / "fit-calls.log"),
            hang=hang,
            stdout=answer[0],
            stderr=answer[1],
            status=status,
        )
    )
    script.chmod(0o755)
    return script


def fit_calls(directory: Path) -> list[str]:
    """The command lines the fake tool in `directory` was run with."""
    log = directory / "fit-calls.log"
    return log.read_text().splitlines() if log.exists() else []
