"""The settings page's address with the admin token, as `serve` announces it and `llamaship
open` opens it (as Jupyter does): `http://127.0.0.1:8765/settings#token=<token>`.

The token rides in the URL fragment, which a browser never sends to the server (so it stays
out of every server log); the page's script reads it, keeps it for the tab and removes it
from the address bar.
"""

from __future__ import annotations

from pathlib import Path

from llamaship.errors import ConfigError

PAGE_PATH = "/settings"
# A server listening on every address is reached on the loopback one.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def base_url(host: str, port: int) -> str:
    """`http://host:port` for a server bound to `host` (an IPv6 address in brackets)."""
    host = host.strip().strip("[]")
    host = _ANY_ADDRESS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def page_url(base: str, token: str) -> str:
    """The settings page at `base`, the admin token in the fragment."""
    return f"{base.rstrip('/')}{PAGE_PATH}#token={token}"


def served_port(port: int, port_file: Path | None) -> int:
    """The port a running server listens on: the configured one, or (LLAMASHIP_PORT=0) the
    one it wrote to LLAMASHIP_PORT_FILE."""
    if port != 0:
        return port
    if port_file is None:
        msg = (
            "LLAMASHIP_PORT is 0 (any free port) and no LLAMASHIP_PORT_FILE is set, so the "
            "server's port cannot be known: set LLAMASHIP_PORT_FILE, or a fixed LLAMASHIP_PORT"
        )
        raise ConfigError(msg)
    try:
        text = port_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        msg = (
            f"cannot read the server's port from LLAMASHIP_PORT_FILE {port_file} "
            f"({getattr(error, 'strerror', None) or error}): start it with `llamaship serve`"
        )
        raise ConfigError(msg) from None
    if not text.isdigit() or not 0 < int(text) < 65536:
        msg = f"LLAMASHIP_PORT_FILE {port_file} holds no port: start the server again"
        raise ConfigError(msg)
    return int(text)
