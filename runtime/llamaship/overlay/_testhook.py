"""Pause points for the crash tests (SIGKILL at each install step); inert in production.

Only when the environment variable `LLAMASHIP_TEST_PAUSE_AT` names a step does the process,
on reaching that step, log `LLAMASHIP_TEST_PAUSED <step>` (WARNING, logger
`llamaship.overlay._testhook`) and then sleep until it is killed. Unset (always, outside the
test suite) the check is one dictionary lookup. Steps, in install order:

- `index`: the release index and both manifests are verified, nothing downloaded yet;
- `download`: mid-download, the first chunk of the first archive is on disk (`*.part`);
- `extract`: mid-extraction, the first file of a layer is written in its `.staging-*` dir;
- `renamed`: the new layers are renamed into `layers/<id>`, before the probe;
- `probed`: the probe passed, before the pointers change;
- `switch`: `previous.json` is written, `active.json` not yet.
"""

from __future__ import annotations

import logging
import os
import time

PAUSE_ENV = "LLAMASHIP_TEST_PAUSE_AT"
PAUSED_MARKER = "LLAMASHIP_TEST_PAUSED"
STEPS = ("index", "download", "extract", "renamed", "probed", "switch")

_log = logging.getLogger(__name__)


def pause_if_requested(step: str) -> None:
    """Sleep forever at `step` if the test environment asks for it."""
    if os.environ.get(PAUSE_ENV) != step:
        return
    _log.warning("%s %s", PAUSED_MARKER, step)
    while True:
        time.sleep(3600)
