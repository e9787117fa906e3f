"""The exit status table of docs/runtime.md, written from `ExitStatus` (one meaning each)."""

from __future__ import annotations

from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_contract.names import EXIT_STATUS_MEANINGS, ExitStatus

BEGIN = "<!-- exit-statuses: begin (python -m llamaship_build exit-statuses) -->"
END = "<!-- exit-statuses: end -->"


def render_table() -> str:
    """The markdown table: every status, in order, with its one meaning."""
    missing = [status.name for status in ExitStatus if status not in EXIT_STATUS_MEANINGS]
    if missing:
        msg = f"ExitStatus members without a meaning in EXIT_STATUS_MEANINGS: {missing}"
        raise BuildError(msg)
    rows = [
        f"| {int(status)} | `{status.name}` | {EXIT_STATUS_MEANINGS[status]} |"
        for status in ExitStatus
    ]
    return "\n".join(["| status | name | meaning |", "| --- | --- | --- |", *rows])


def with_table(text: str, origin: Path) -> str:
    """`text` with the part between the markers replaced by the current table."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        msg = f"{origin} has no exit status table between the markers {BEGIN} and {END}"
        raise BuildError(msg)
    return f"{text[:start]}{BEGIN}\n{render_table()}\n{text[end:]}"


def sync(doc: Path, *, check: bool) -> bool:
    """Write the table into `doc` (or with `check`, only compare); whether it was current."""
    text = doc.read_text(encoding="utf-8")
    updated = with_table(text, doc)
    if updated != text and not check:
        doc.write_text(updated, encoding="utf-8")
    return updated == text
