"""Named steps of an overlay install, where a caller may observe or interrupt it.

A caller passes an `InstallObserver` to the `Installer` (`observer=`); the installer tells it
each step as it reaches it, in the installing thread (a test pauses a child process at a step
and SIGKILLs it there). Without one, nothing is called. Steps, in install order:

- `index`: the release index and both manifests are verified, nothing downloaded yet;
- `download`: mid-download, the first chunk of an archive is on disk (`*.part`);
- `extract`: mid-extraction, the first file of a layer is written in its `.staging-*` dir;
- `renamed`: the new layers are renamed into `layers/<id>`, before the probe;
- `probed`: the probe passed, before the pointers change;
- `switch`: `previous.json` is written, `active.json` not yet.
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args

Step = Literal["index", "download", "extract", "renamed", "probed", "switch"]
STEPS: tuple[Step, ...] = get_args(Step)


class InstallObserver(Protocol):
    """Called with each step the installer reaches, in the installing thread."""

    def __call__(self, step: Step, /) -> None: ...


def ignore_step(step: Step, /) -> None:
    """The observer of an install nobody watches."""
