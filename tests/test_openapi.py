"""The HTTP API's OpenAPI document: typed `/api/*` replies, exported by the build through the
backend's `openapi` command, and kept current in docs/schemas/openapi.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llamaship_build import openapi
from llamaship_build.errors import BuildError

ROOT = Path(__file__).resolve().parent.parent
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(openapi.openapi_text())
    return parsed


def _operations(document: dict[str, Any], prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in sorted(document["paths"].items())
        if path.startswith(prefix)
        for method, operation in sorted(item.items())
        if method in METHODS
    ]


def test_docs_openapi_is_current() -> None:
    assert not openapi.is_stale(ROOT / "docs" / "schemas"), (
        "docs/schemas/openapi.json is stale: run `nox -s schemas`"
    )


def test_is_stale_notices_a_change_and_a_missing_file(tmp_path: Path) -> None:
    written = openapi.export(tmp_path)
    assert written == tmp_path / "openapi.json"
    assert not openapi.is_stale(tmp_path)
    written.write_text(written.read_text().replace('"/api/health"', '"/api/healthy"'))
    assert openapi.is_stale(tmp_path)
    written.unlink()
    assert openapi.is_stale(tmp_path)


def test_a_python_that_cannot_run_the_command_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"did not run .*run `nox -s schemas`"):
        openapi.openapi_text(str(tmp_path / "no-python"))


def test_every_api_reply_and_body_is_a_typed_model(document: dict[str, Any]) -> None:
    operations = _operations(document, "/api/")
    assert len(operations) >= 13  # every /api route of today, and any added later
    untyped = []
    for path, method, operation in operations:
        replies = {
            status: reply
            for status, reply in operation["responses"].items()
            if status.startswith("2")
        }
        assert len(replies) == 1, f"{method} {path}: {sorted(replies)}"
        for reply in replies.values():
            schema = reply["content"]["application/json"]["schema"]
            if "$ref" not in schema:
                untyped.append(f"{method} {path} reply: {schema}")
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and "$ref" not in json.dumps(body["schema"]):
            untyped.append(f"{method} {path} body: {body['schema']}")
    assert untyped == []


def test_every_route_documents_the_openai_style_error_reply(document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document, "/"):
        for status in ("4XX", "5XX"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorReply"}, f"{method} {path}"
        assert "422" not in operation["responses"], f"{method} {path}: FastAPI's own 422 shape"
    assert "HTTPValidationError" not in document["components"]["schemas"]
    error = document["components"]["schemas"]["ErrorDetail"]
    assert sorted(error["properties"]) == ["code", "message", "param", "type"]


def test_the_openai_routes_keep_their_permissive_replies(document: dict[str, Any]) -> None:
    paths = [path for path, _, _ in _operations(document, "/v1/")]
    assert paths == ["/v1/chat/completions", "/v1/embeddings", "/v1/models"]
    for path, method, operation in _operations(document, "/v1/"):
        reply = operation["responses"]["200"]
        assert "$ref" not in json.dumps(reply), f"{method} {path}"


def test_the_command_boots_nothing_and_needs_no_llama_cpp(tmp_path: Path) -> None:
    """`llamaship openapi` builds the routes only: no llama_cpp import, nothing written to
    LLAMASHIP_HOME (no admin token), the same text as the export."""
    home = tmp_path / "home"
    script = (
        "import sys\n"
        "from llamaship_backend.cli import main\n"
        "status = main(['openapi'])\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "LLAMASHIP_HOME": str(home)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == openapi.openapi_text()
    assert not home.exists()
    assert result.stdout.isascii()
