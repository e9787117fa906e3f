"""The `llamaship` command and the bundle's `backend` executable: the runtime's commands, with
this package's HTTP app as what `serve` runs.

The dependency points one way: this package hands its app to the runtime's CLI
(`llamaship.cli.main(serve_app=...)`); the runtime never imports the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from llamaship import cli

if TYPE_CHECKING:
    from llamaship.launch.outcome import BootState

# Commands that need this package (name -> module with `add_parser` and `run`).
COMMANDS: dict[str, str] = {
    "bench": "llamaship_backend.cli_bench",
    "openapi": "llamaship_backend.cli_openapi",
}


def serve_app(state: BootState, on_listening: Callable[[], None]) -> int:
    """Run the HTTP app until stopped (imported late: the web stack and llama_cpp load only
    once the bootstrap chose the build)."""
    from llamaship_backend.server import serve

    return serve(state, on_listening=on_listening)


def main(
    argv: Sequence[str] | None = None,
    prog: str = "llamaship",
    *,
    trusted_keys: Sequence[str] | None = None,
) -> int:
    """`llamaship`: every command (none named: the help); `serve` runs this package's app."""
    return cli.main(
        argv, prog, trusted_keys=trusted_keys, serve_app=serve_app, extra_commands=COMMANDS
    )


def backend_main() -> int:
    """Entry point of the frozen bundle: the same commands, named `backend`, with `serve` as
    the default (apps spawn it without arguments)."""
    return cli.main(
        None,
        "backend",
        serve_app=serve_app,
        extra_commands=COMMANDS,
        default_command="serve",
    )
