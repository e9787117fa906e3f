"""Probe an overlay before its first activation and again after the driver changes."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

from llamaship.detect.fingerprint import compute_fingerprint
from llamaship.overlay._fs import atomic_write_json
from llamaship.overlay.store import InstalledOverlay
from llamaship.paths import DataDirs
from llamaship.probe import run_probe

_log = logging.getLogger(__name__)
PROBE_RECORD = "probe.json"
PROBE_TIMEOUT_S = 120.0  # first CUDA initialisation can be slow


def _probe_key(overlay: InstalledOverlay) -> dict[str, object]:
    """What a passed probe vouches for: these overlay layers with this driver and these GPUs."""
    return {"overlay_version": overlay.overlay_version, "layers": dict(overlay.layers),
            "driver": compute_fingerprint({})}


def ensure_probed(overlay: InstalledOverlay, dirs: DataDirs) -> None:
    """Run the probe unless it already passed for this overlay and driver; raises ProbeFailed."""
    record = dirs.state / PROBE_RECORD
    key = json.loads(json.dumps(_probe_key(overlay)))  # as it reads back from JSON
    try:
        if json.loads(record.read_text()).get("key") == key:
            return
    except (OSError, ValueError, AttributeError):
        pass  # no record, or an unreadable one: probe again
    _log.info("probing overlay %s", overlay.overlay_version)
    result = run_probe(overlay.llama_dir, overlay.runtime_lib_dir, PROBE_TIMEOUT_S)
    atomic_write_json(record, {"key": key, "result": asdict(result)})
