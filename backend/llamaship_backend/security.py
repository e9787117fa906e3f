"""What keeps web pages and other machines out of the API (docs/security.md).

- `require_admin`: the dependency of every admin and state-changing route. It wants
  `Authorization: Bearer <token>` with the install's token (`llamaship.admin_token`), compared
  in constant time.
- `RequestGuard`: a pure ASGI middleware in front of everything (404s and streams included). It
  refuses a `Host` that is not this server's address (DNS rebinding, as in Ollama's
  CVE-2024-28224), any `Origin` other than the server's own (so no cross-site request and no
  CORS allowance, preflights included), and a body on POST/PUT/PATCH/DELETE that is not
  `application/json` (the "simple" cross-site POSTs: text/plain, forms), before it is read.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Mapping
from typing import Annotated, ClassVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from llamaship_backend.error_replies import error_response
from llamaship_backend.errors import BackendError

logger = logging.getLogger(__name__)

ADMIN_SCHEME = "adminToken"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Addresses that mean "every interface": then the machine's own IP addresses are its names.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_HOST_HEADER = re.compile(r"(?:\[(?P<ip6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9.-]+))(?::[0-9]{1,5})?")
_HOW_TO_AUTHENTICATE = (
    "send the text of LLAMASHIP_HOME/admin-token as `Authorization: Bearer <token>`"
)


class AdminTokenRequired(BackendError):
    """An admin call came without `Authorization: Bearer <token>`."""

    status_code = 401
    code = "admin_token_required"
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": 'Bearer realm="llamaship"'}


class AdminTokenInvalid(AdminTokenRequired):
    """An admin call came with a token that is not this install's."""

    code = "admin_token_invalid"
    headers: ClassVar[Mapping[str, str]] = {
        "WWW-Authenticate": 'Bearer realm="llamaship", error="invalid_token"'
    }


# Declares the scheme in the OpenAPI schema (each admin operation lists it under `security`);
# `require_admin` gives the answer itself, in the project's error shape.
admin_bearer = HTTPBearer(
    scheme_name=ADMIN_SCHEME,
    auto_error=False,
    description="The text of LLAMASHIP_HOME/admin-token.",
)


def admin_token_of(request: Request) -> str:
    token: str = request.app.state.admin_token
    return token


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    """FastAPI dependency: refuse (401) a request without this install's admin token."""
    if credentials is None:
        msg = f"This is an admin call: {_HOW_TO_AUTHENTICATE}."
        raise AdminTokenRequired(msg)
    # Header values arrive as latin-1 text; compare bytes, in time independent of the content.
    presented = credentials.credentials.encode("latin-1")
    if not hmac.compare_digest(presented, admin_token_of(request).encode()):
        msg = f"The admin token is not this install's: {_HOW_TO_AUTHENTICATE}."
        raise AdminTokenInvalid(msg)


def host_of(header: str) -> str | None:
    """The host part of a `Host` header (`name`, `1.2.3.4`, `::1`), lowercased; None if the
    header is not a plain host with an optional port."""
    match = _HOST_HEADER.fullmatch(header.strip().lower())
    if match is None:
        return None
    return match["ip6"] or match["name"]


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class RequestGuard:
    """Pure ASGI middleware: answers refused requests itself, passes the rest on untouched."""

    def __init__(self, app: ASGIApp, configured_host: str) -> None:
        self.app = app
        self.configured_host = configured_host.strip().strip("[]").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The app has no WebSocket routes (Starlette closes those itself); lifespan has no Host.
        if scope["type"] == "http":
            refusal = self.refusal(Headers(scope=scope), scope["method"])
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def allows_host(self, host: str) -> bool:
        """Loopback names, the configured host, and with a wildcard bind any IP address (a
        browser that addresses the machine by IP cannot be rebound to it by DNS)."""
        if is_loopback(host) or host == self.configured_host:
            return True
        return self.configured_host in WILDCARD_HOSTS and _is_ip_address(host)

    def refusal(self, headers: Headers, method: str) -> JSONResponse | None:
        """The reply for a request that must not reach the app, or None to let it through."""
        host_header = headers.get("host")
        # A request without Host (HTTP/1.0) does not come from a browser, which always sends one.
        if host_header is not None:
            host = host_of(host_header)
            if host is None or not self.allows_host(host):
                return _refuse(
                    421,
                    "host_not_allowed",
                    (
                        f"Refused: the Host header {host_header[:100]!r} does not name this server "
                        "(use localhost, 127.0.0.1 or [::1], or LLAMASHIP_HOST); a web page that "
                        "reaches it through DNS rebinding cannot use the API."
                    ),
                )
        origin = headers.get("origin")
        own_origin = None if host_header is None else f"http://{host_header}".lower()
        if origin is not None and origin.lower() != own_origin:
            return _refuse(
                403,
                "origin_not_allowed",
                (
                    f"Refused: requests from the web origin {origin[:100]!r} are not allowed; only "
                    "pages served by this server itself and programs that send no Origin header "
                    "may call the API."
                ),
            )
        if method not in SAFE_METHODS:
            content_type = headers.get("content-type")
            has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
            media_type = (content_type or "").partition(";")[0].strip().lower()
            if (content_type is not None or has_body) and media_type != "application/json":
                return _refuse(
                    415,
                    "unsupported_media_type",
                    (
                        f"Refused: a {method} body must be sent with "
                        "Content-Type: application/json "
                        f"(this one came as {(content_type or 'no Content-Type')[:100]!r})."
                    ),
                )
        return None


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    logger.warning("refused a request (%d %s)", status, code)
    return error_response(status, message, "invalid_request_error", code)
