"""`llamaship serve`: boot (detect, decide, activate llama.cpp) and run the HTTP backend."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the backend HTTP server (the default command)",
        description="Run the OpenAI-compatible llama.cpp backend. Options override "
                    "LLAMASHIP_HOST, LLAMASHIP_PORT and LLAMASHIP_MODEL.",
    )
    parser.add_argument("--host", help="address to listen on (LLAMASHIP_HOST)")
    parser.add_argument("--port", help="TCP port, 0 for any free one (LLAMASHIP_PORT)")
    parser.add_argument("--model", help="GGUF model file to serve (LLAMASHIP_MODEL)")


def run(args: argparse.Namespace) -> int:
    from llamaship.bootstrap import boot, mark_healthy
    from llamaship.config import default_env_file, resolve_settings

    env_file = Path(args.env_file) if args.env_file else default_env_file()
    cli = {"LLAMASHIP_HOST": args.host, "LLAMASHIP_PORT": args.port, "LLAMASHIP_MODEL": args.model}
    settings = resolve_settings(cli=cli, env_file=env_file)
    state = boot(settings)
    # Imported after boot: the web stack and llama_cpp load only once the build is chosen.
    from llamaship_backend.server import serve

    return serve(state, on_healthy=lambda: mark_healthy(state))
