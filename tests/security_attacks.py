"""The web-page and network attacks on the API, and the calls that must keep working: one list,
run against the app on loopback (test_backend_security.py) and the frozen bundle
(test_bundle_security.py). `{token}`, `{short_token}` (one character short) and `{port}` in
paths and header values are filled in when sent."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import httpx

ADMIN_ENDPOINTS = (
    ("POST", "/api/admin/benchmark"),
    ("POST", "/api/admin/restart"),
    ("POST", "/api/admin/upgrade-gpu"),
    ("GET", "/api/admin/upgrade-gpu/job-1"),
)
CHAT = b'{"messages": [{"role": "user", "content": "Hi"}], "stream": true}'
BEARER = {"Authorization": "Bearer {token}"}
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Call:
    """One request and the status (and error code) it must get."""

    name: str
    method: str
    path: str
    status: int
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def send(self, client: httpx.Client, token: str, port: int) -> httpx.Response:
        values = {"token": token, "port": port, "short_token": token[:-1]}
        headers = {key: value.format(**values) for key, value in self.headers.items()}
        path = self.path.format(**values)
        return client.request(self.method, path, headers=headers, content=self.body)

    def check(self, reply: httpx.Response, token: str) -> None:
        assert reply.status_code == self.status, (self.name, reply.status_code, reply.text)
        assert "access-control-allow-origin" not in reply.headers, self.name
        assert not any(name.startswith("access-control-allow-") for name in reply.headers)
        assert token not in reply.text, f"{self.name}: the reply holds the admin token"
        if self.code is not None:
            error = reply.json()["error"]
            assert error["code"] == self.code, (self.name, error)
            assert error["message"] and error["type"], self.name
        if self.status == 401:
            assert reply.headers["www-authenticate"].startswith("Bearer "), self.name


def _token_attacks() -> list[Call]:
    presented = {
        "no-header": ({}, "admin_token_required"),
        "empty-bearer": ({"Authorization": "Bearer"}, "admin_token_required"),
        "basic-scheme": ({"Authorization": "Basic {token}"}, "admin_token_required"),
        "wrong-token": ({"Authorization": "Bearer " + "0" * 64}, "admin_token_invalid"),
        "token-prefix": ({"Authorization": "Bearer {short_token}"}, "admin_token_invalid"),
        "token-and-more": ({"Authorization": "Bearer {token}0"}, "admin_token_invalid"),
        "token-in-query": ({}, "admin_token_required"),
    }
    calls = []
    for method, path in ADMIN_ENDPOINTS:
        for name, (headers, code) in presented.items():
            query = "?token={token}" if name == "token-in-query" else ""
            calls.append(
                Call(
                    f"{name}:{method}:{path}",
                    method,
                    path + query,
                    401,
                    code,
                    {**headers, **(JSON if method == "POST" else {})},
                    b"{}" if method == "POST" else None,
                )
            )
    return calls


def _rebinding_attacks() -> list[Call]:
    hosts = [
        "evil.example:{port}",
        "evil.example",
        "localhost.evil.example:{port}",
        "127.0.0.1.nip.io:{port}",
        "10.0.0.1:{port}",
        "[::2]:{port}",
        "localhost:{port}@evil.example",
        "localhost:{port}.evil.example",
        "",
    ]
    calls = []
    for host in hosts:
        calls.append(
            Call(
                f"host={host!r}:GET /api/capabilities",
                "GET",
                "/api/capabilities",
                421,
                "host_not_allowed",
                {"Host": host},
            )
        )
        calls.append(
            Call(
                f"host={host!r}:POST /api/admin/restart",
                "POST",
                "/api/admin/restart",
                421,
                "host_not_allowed",
                {"Host": host, **BEARER, **JSON},
                b"{}",
            )
        )
    for method, path, body in [
        ("GET", "/api/health", None),
        ("GET", "/v1/models", None),
        ("GET", "/no/such/route", None),
        ("POST", "/v1/chat/completions", CHAT),
    ]:
        calls.append(
            Call(
                f"host=evil:{method} {path}",
                method,
                path,
                421,
                "host_not_allowed",
                {"Host": "evil.example:{port}", **JSON},
                body,
            )
        )
    return calls


def _origin_attacks() -> list[Call]:
    origins = [
        "https://evil.example",
        "http://evil.example:{port}",
        "null",
        "file://",
        "http://localhost:1",
        "http://127.0.0.1.evil.example:{port}",
        "https://127.0.0.1:{port}",
    ]
    calls = []
    for origin in origins:
        calls.append(
            Call(
                f"origin={origin}:GET /api/capabilities",
                "GET",
                "/api/capabilities",
                403,
                "origin_not_allowed",
                {"Origin": origin},
            )
        )
        calls.append(
            Call(
                f"origin={origin}:POST /v1/chat/completions",
                "POST",
                "/v1/chat/completions",
                403,
                "origin_not_allowed",
                {"Origin": origin, **JSON},
                CHAT,
            )
        )
        calls.append(
            Call(
                f"origin={origin}:POST /api/admin/restart",
                "POST",
                "/api/admin/restart",
                403,
                "origin_not_allowed",
                {"Origin": origin, **BEARER, **JSON},
                b"{}",
            )
        )
    calls.append(
        Call(
            "origin=localhost for host 127.0.0.1",
            "GET",
            "/api/capabilities",
            403,
            "origin_not_allowed",
            {"Host": "127.0.0.1:{port}", "Origin": "http://localhost:{port}"},
        )
    )
    for origin in ["https://evil.example", "null"]:
        for path in ["/v1/chat/completions", "/api/admin/restart"]:
            calls.append(
                Call(
                    f"preflight origin={origin}:{path}",
                    "OPTIONS",
                    path,
                    403,
                    "origin_not_allowed",
                    {
                        "Origin": origin,
                        "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "authorization,content-type",
                    },
                )
            )
    return calls


def _simple_post_attacks() -> list[Call]:
    """What a page may POST cross-site without a preflight, even with the token guessed."""
    kinds = {
        "text-plain": ({"Content-Type": "text/plain"}, CHAT),
        "text-plain-charset": ({"Content-Type": "text/plain;charset=UTF-8"}, CHAT),
        "form": ({"Content-Type": "application/x-www-form-urlencoded"}, b"n_tokens=8"),
        "multipart": (
            {"Content-Type": "multipart/form-data; boundary=x"},
            b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n',
        ),
        "no-content-type": ({}, CHAT),
    }
    paths = [
        "/v1/chat/completions",
        "/v1/embeddings",
        "/api/admin/benchmark",
        "/api/admin/restart",
        "/api/admin/upgrade-gpu",
    ]
    return [
        Call(
            f"{kind}:POST {path}",
            "POST",
            path,
            415,
            "unsupported_media_type",
            {**headers, **BEARER},
            body,
        )
        for kind, (headers, body) in kinds.items()
        for path in paths
    ]


ATTACKS = [*_token_attacks(), *_rebinding_attacks(), *_origin_attacks(), *_simple_post_attacks()]

# What a local program, the desktop shell or the server's own page does: past the guard and
# the token check (no model or release URL is configured, hence the 409s).
ALLOWED = [
    *[
        Call(f"host={host}", "GET", "/api/health", 200, None, {"Host": host})
        for host in [
            "127.0.0.1:{port}",
            "localhost:{port}",
            "LOCALHOST:{port}",
            "localhost",
            "127.0.0.1",
            "127.45.6.7:{port}",
            "[::1]:{port}",
            "[::1]",
        ]
    ],
    Call(
        "same-origin page",
        "GET",
        "/api/capabilities",
        200,
        None,
        {"Host": "127.0.0.1:{port}", "Origin": "http://127.0.0.1:{port}"},
    ),
    Call(
        "same-origin admin call",
        "POST",
        "/api/admin/benchmark",
        409,
        "model_not_configured",
        {"Host": "localhost:{port}", "Origin": "http://localhost:{port}", **BEARER, **JSON},
        b"{}",
    ),
    Call(
        "json with charset",
        "POST",
        "/v1/chat/completions",
        409,
        "model_not_configured",
        {"Content-Type": "application/json; charset=utf-8"},
        CHAT,
    ),
    Call(
        "admin benchmark",
        "POST",
        "/api/admin/benchmark",
        409,
        "model_not_configured",
        {**BEARER, **JSON},
        b"{}",
    ),
    Call(
        "admin benchmark without body",
        "POST",
        "/api/admin/benchmark",
        409,
        "model_not_configured",
        BEARER,
    ),
    Call("admin upgrade", "POST", "/api/admin/upgrade-gpu", 409, "upgrade_not_configured", BEARER),
    Call(
        "admin upgrade progress",
        "GET",
        "/api/admin/upgrade-gpu/job-1",
        404,
        "upgrade_job_not_found",
        BEARER,
    ),
    Call(
        "lowercase bearer",
        "GET",
        "/api/admin/upgrade-gpu/job-1",
        404,
        "upgrade_job_not_found",
        {"Authorization": "bearer {token}"},
    ),
]


def refused_before_the_body(port: int) -> bytes:
    """Send the head of a text/plain POST that announces 1 MB, and no body: the reply must
    come at once (the guard answers without reading or waiting for the body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            b"POST /api/admin/restart HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        return connection.recv(65536)
