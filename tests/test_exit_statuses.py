"""One meaning per exit status: docs/runtime.md's table is the one `ExitStatus` writes, and no
error class carries a bare number."""

from __future__ import annotations

import re
from pathlib import Path

from llamaship_build.exit_statuses import render_table, with_table
from llamaship_contract.names import EXIT_STATUS_MEANINGS, ExitStatus

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "runtime.md"


def test_runtime_doc_shows_the_table_of_exit_status() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert with_table(text, DOC) == text, (
        "docs/runtime.md's exit status table is stale: run `python -m llamaship_build "
        "exit-statuses`"
    )
    assert render_table() in text


def test_every_status_has_one_distinct_meaning() -> None:
    assert set(EXIT_STATUS_MEANINGS) == set(ExitStatus)
    meanings = list(EXIT_STATUS_MEANINGS.values())
    assert len(set(meanings)) == len(meanings)


def test_error_classes_use_the_enum_not_numbers() -> None:
    bare = re.compile(r"^\s*exit_code(?:: int)? = \d+\s*$", re.MULTILINE)
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group().strip()}"
        for top in ("contract", "runtime", "backend", "packaging")
        for path in sorted((ROOT / top).rglob("*.py"))
        for match in bare.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
