"""Named steps of an overlay install, where a caller may observe or interrupt it.

The installer calls `checkpoint(step)` as it reaches each step; with no callback set (the
application never sets one) that does nothing. Tests set one through `set_checkpoint`, e.g. to
pause a child process at a step and SIGKILL it there. Steps, in install order:

- `index`: the release index and both manifests are verified, nothing downloaded yet;
- `download`: mid-download, the first chunk of the first archive is on disk (`*.part`);
- `extract`: mid-extraction, the first file of a layer is written in its `.staging-*` dir;
- `renamed`: the new layers are renamed into `layers/<id>`, before the probe;
- `probed`: the probe passed, before the pointers change;
- `switch`: `previous.json` is written, `active.json` not yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

Step = Literal["index", "download", "extract", "renamed", "probed", "switch"]
STEPS: tuple[Step, ...] = get_args(Step)

CheckpointFn = Callable[[Step], None]
"""Called with the step the installer reached, in the installing thread."""

_callback: CheckpointFn | None = None


def set_checkpoint(callback: CheckpointFn | None) -> None:
    """Call `callback` at every step from now on (None: stop calling anything)."""
    global _callback  # one process-wide observer, set by the program embedding the installer
    _callback = callback


def checkpoint(step: Step) -> None:
    """The installer reached `step`: tell the callback, if one is set."""
    if _callback is not None:
        _callback(step)
