"""`/settings`: the settings page, static HTML, CSS and JS shipped in this package.

No build step and nothing from another origin. The page holds no secret: the desktop shell
opens `/settings#token=<admin token>`; the fragment never reaches the server, and the page's
script keeps the token in sessionStorage and sends it as `Authorization: Bearer` on admin calls.
A strict Content-Security-Policy allows only this server's own scripts, styles and API, no
inline script, and no framing by another page.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Final

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

STATIC_PACKAGE: Final = "llamaship_backend"
CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@cache
def static_bytes(name: str) -> bytes:
    """A file of `llamaship_backend/static/` (package data; in the bundle too)."""
    return files(STATIC_PACKAGE).joinpath("static", name).read_bytes()


def _page_file(name: str, media_type: str) -> Response:
    return Response(static_bytes(name), media_type=media_type, headers=PAGE_HEADERS)


@router.get("/settings")
def settings_page() -> Response:
    """The settings page."""
    return _page_file("settings.html", "text/html; charset=utf-8")


@router.get("/settings/settings.js")
def settings_script() -> Response:
    return _page_file("settings.js", "text/javascript; charset=utf-8")


@router.get("/settings/settings.css")
def settings_style() -> Response:
    return _page_file("settings.css", "text/css; charset=utf-8")
