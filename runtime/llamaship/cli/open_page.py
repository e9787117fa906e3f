"""`llamaship open`: open the settings page in a browser, with the admin token (or print it)."""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "open",
        help="open the settings page (with the admin token) in a browser",
        description="Open the running server's settings page in the default browser, the "
        "admin token in the address's fragment (never sent to the server); without a "
        "browser, print the address to open.",
    )
    parser.add_argument(
        "--print",
        action="store_true",
        dest="print_only",
        help="print the address instead of opening a browser",
    )


def _has_display() -> bool:
    """A graphical browser can open (else `webbrowser` may start a text one in this terminal)."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(args: argparse.Namespace) -> int:
    import webbrowser

    from llamaship import admin_token
    from llamaship.config import executable_dir, load_settings
    from llamaship.settings_page import base_url, page_url, served_port

    settings = load_settings(args.env_file, bundle_dir=executable_dir())
    base = base_url(settings.host, served_port(settings.port, settings.port_file))
    url = page_url(base, admin_token.read_or_create(settings.home))
    if not args.print_only and _has_display() and webbrowser.open(url):
        print(f"opened the settings page of {base} in the browser")
        return 0
    print(url)
    return 0
