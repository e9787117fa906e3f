"""`llamaship openapi`: print the OpenAPI document of the HTTP API (sorted keys, ASCII).

A command of this package (registered in `llamaship_backend.cli.COMMANDS`). It builds the
routes only (`app.routed_app`): no boot, no model, no llama_cpp. The build's `schemas` step
runs it in a subprocess and keeps its output in docs/schemas/openapi.json.
"""

from __future__ import annotations

import argparse
import json
import sys


def openapi_text() -> str:
    """The OpenAPI document as the exported file holds it: indented, sorted, newline-ended."""
    from llamaship_backend.app import routed_app

    return json.dumps(routed_app().openapi(), indent=2, sort_keys=True) + "\n"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    subparsers.add_parser(
        "openapi",
        help="print the HTTP API's OpenAPI document",
        description="Print the OpenAPI document of the HTTP API (/api/* and /v1/*) as JSON "
        "with sorted keys; docs/schemas/openapi.json holds it (`nox -s schemas`).",
    )


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(openapi_text())
    return 0
