"""Test launcher: `python tests/catalogue_cli.py KEY CATALOGUE ARGS...` runs the real `llamaship`
command with ARGS, trusting the release public key KEY besides the bundled ones (as
tests/trusting_cli.py does), and serving a model store whose catalogue is the JSON file
CATALOGUE instead of the bundled one.

Both go in through the Python API (`llamaship.cli.main(trusted_keys=..., serve_app=...)` and
`llamaship_backend.server.serve(model_store=...)`); a restart re-runs this same command line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from llamaship import cli
from llamaship.io.trusted_keys import bundled_trusted_keys
from llamaship.launch.outcome import BootState
from llamaship_backend.cli import COMMANDS


def serve_with_catalogue(catalogue_file: Path) -> Callable[[BootState, Callable[[], None]], int]:
    def serve_app(state: BootState, on_listening: Callable[[], None]) -> int:
        # Imported here, as the backend's own serve_app does: after the bootstrap chose llama_cpp.
        from llamaship.models.store import ModelStore
        from llamaship_backend.server import serve
        from llamaship_contract.document import parse_document
        from llamaship_contract.models import ModelCatalogue

        catalogue = parse_document(ModelCatalogue, catalogue_file.read_bytes(), str(catalogue_file))
        store = ModelStore(state.dirs.home, catalogue)
        return serve(state, on_listening, model_store=store)

    return serve_app


if __name__ == "__main__":
    key, catalogue_path, *arguments = sys.argv[1:]
    raise SystemExit(
        cli.main(
            arguments,
            trusted_keys=(*bundled_trusted_keys().release, key),
            serve_app=serve_with_catalogue(Path(catalogue_path)),
            extra_commands=COMMANDS,
        )
    )
