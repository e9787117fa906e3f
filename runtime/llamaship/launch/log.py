"""The launch's logging, set up in one place: INFO to the console and to a bounded log file.

The file is `LLAMASHIP_HOME/logs/llamaship.log`, rotated at `MAX_BYTES` with `BACKUPS` old
files kept (at most 4 MiB in all). Library modules only log; the `serve` command calls
`configure` once, before the bootstrap, so the decision, its reason and events land in both.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llamaship.overlay.install import InstallProgress

_log = logging.getLogger(__name__)

LOG_DIR = "logs"
LOG_NAME = "llamaship.log"
MAX_BYTES = 1 * 2**20
BACKUPS = 3
CONSOLE_FORMAT = "%(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
PROGRESS_STEP_PERCENT = 10
# A record with this attribute set (`extra={CONSOLE_SKIPS: True}`) goes to the log file only:
# the command prints that line to stderr itself (the error a launch ended with).
CONSOLE_SKIPS = "llamaship_file_only"


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, CONSOLE_SKIPS, False)


def log_file(home: Path) -> Path:
    return home / LOG_DIR / LOG_NAME


def configure(
    home: Path, *, to_file: bool = True, max_bytes: int = MAX_BYTES, backups: int = BACKUPS
) -> Path | None:
    """Log INFO and above to stderr and (unless `to_file` is False) to the rotating file.

    Returns the log file, or None when it cannot be opened (then only the console logs, and
    a warning says why: a read-only home must not stop the launch)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    consoles = [
        handler
        for handler in root.handlers
        if isinstance(handler, logging.StreamHandler)
        and getattr(handler, "stream", None) in (sys.stderr, sys.__stderr__)
    ]
    if not consoles:
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
        root.addHandler(console)
        consoles.append(console)
    for console in consoles:
        if _not_file_only not in console.filters:
            console.addFilter(_not_file_only)
    if not to_file:
        return None
    path = log_file(home)
    for handler in root.handlers:
        if isinstance(handler, RotatingFileHandler) and Path(handler.baseFilename) == path:
            return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    except OSError as error:
        _log.warning("not logging to %s: %s", path, error.strerror or error)
        return None
    file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root.addHandler(file_handler)
    return path


@dataclass
class InstallProgressLog:
    """An installer progress callback for the launch (AUTO_UPGRADE_GPU): each step's message
    once, and the download every `PROGRESS_STEP_PERCENT` %, at INFO."""

    step_percent: int = PROGRESS_STEP_PERCENT
    next_percent: int = 0
    said: set[str] = field(default_factory=set)

    def __call__(self, progress: InstallProgress) -> None:
        if progress.message and progress.message not in self.said:
            self.said.add(progress.message)
            _log.info("AUTO_UPGRADE_GPU: %s", progress.message)
        if progress.phase == "download" and progress.bytes_total > 0:
            percent = 100 * progress.bytes_done // progress.bytes_total
            if percent >= self.next_percent:
                _log.info(
                    "AUTO_UPGRADE_GPU: downloaded %d %% (%.1f of %.1f MB)",
                    percent,
                    progress.bytes_done / 1e6,
                    progress.bytes_total / 1e6,
                )
                self.next_percent = (percent // self.step_percent + 1) * self.step_percent
