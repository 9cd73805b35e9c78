"""The console's Host and Origin guard: DNS rebinding and cross-site requests are refused before Streamlit.

A page on a foreign name (`evil.test`) that resolves to 127.0.0.1 reaches the console with that name in its
Host header; a page on any foreign origin that opens `ws://127.0.0.1:8501/_stcore/stream` sends its own
Origin. Streamlit checks neither, so every request (HTTP and websocket upgrade alike, every route: the app
stream, static files, health, media, uploads) goes through `HostGuard` first:

- the Host header must name an allowed host, and
- the Origin header, when present, must name an allowed host too.

Allowed: the loopback names (localhost, 127.0.0.1, ::1), the address the console is bound to when it is a
specific one (not 0.0.0.0 / ::), and the names in PGJOBS_CONSOLE_ALLOWED_HOSTS (comma-separated; `*` allows
any, for a reverse proxy that checks Host itself). Ports are not compared: a rebinding page necessarily uses
the console's own port, and the name is what differs.

With a token (PGJOBS_CONSOLE_TOKEN, or `python -m console --token`, which makes one and prints the URL), a
request must also carry it, Jupyter-style: `/?token=<token>` once, answered with a redirect that sets an
HttpOnly, SameSite=Strict cookie, then the cookie. `/_stcore/health` answers without it (health checks).
This keeps out other local users and programs too, which the Host check cannot tell apart.

`install()` puts the guard in front of Streamlit's own middleware; `python -m console` runs Streamlit through
`console.serve`, which calls it. `app.py` checks the same headers again (`st.context.headers`) so a console
started with a plain `streamlit run` still refuses to draw for a foreign page.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

ALLOWED_HOSTS_ENV = "PGJOBS_CONSOLE_ALLOWED_HOSTS"
TOKEN_ENV = "PGJOBS_CONSOLE_TOKEN"
TOKEN_COOKIE = "pgjobs_console_token"
TOKEN_FREE_PATHS = ("/_stcore/health", "/healthz")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")
_NAME_RE = re.compile(r"^[a-z0-9_.:-]{1,253}$")

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class GuardConfigError(ValueError):
    """PGJOBS_CONSOLE_ALLOWED_HOSTS holds something that is not a host name."""


def normalize(name: str) -> str:
    """A host name as compared: lower case, no brackets around IPv6, no trailing dot."""
    return name.strip().strip("[]").rstrip(".").lower()


def allowed_hosts(env: Mapping[str, str] | None = None, bound_address: str | None = None) -> frozenset[str]:
    """The names the console answers to; raises GuardConfigError for a malformed entry."""
    env = os.environ if env is None else env
    names = set(LOOPBACK_NAMES)
    if bound_address and normalize(bound_address) not in WILDCARD_ADDRESSES:
        names.add(normalize(bound_address))
    for entry in re.split(r"[,\s]+", env.get(ALLOWED_HOSTS_ENV, "")):
        if not entry:
            continue
        if entry == "*":
            names.add("*")
            continue
        name = host_name(entry)
        if name is None or not _NAME_RE.match(name):
            raise GuardConfigError(f"{ALLOWED_HOSTS_ENV}: '{entry}' is not a host name (use names like "
                                   "console.example.com or 10.0.0.5, comma-separated)")
        names.add(name)
    return frozenset(names)


def host_name(host: str) -> str | None:
    """The name in a Host header value ('name', 'name:port', '[::1]:port'), or None if malformed."""
    host = host.strip()
    if not host or "/" in host or "@" in host or " " in host:
        return None
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1:] and not re.fullmatch(r":\d{1,5}", host[end + 1:])):
            return None
        return normalize(host[1:end])
    if host.count(":") == 1:
        name, port = host.split(":")
        if not re.fullmatch(r"\d{1,5}", port):
            return None
        host = name
    return normalize(host) or None


def origin_name(origin: str) -> str | None:
    """The host name of an Origin header value, None for 'null' or anything malformed."""
    try:
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    return normalize(parts.hostname)


def refusal(headers: Mapping[str, str], allowed: Iterable[str]) -> str | None:
    """Why a request with these (lower-case keyed) headers is refused, or None if it is allowed."""
    allowed = frozenset(allowed)
    if "*" in allowed:
        return None
    host = headers.get("host")
    if host is None:
        return "the request has no Host header"
    if host_name(host) not in allowed:
        return f"host '{host[:100]}' is not allowed (add it to {ALLOWED_HOSTS_ENV})"
    origin = headers.get("origin")
    if origin is not None and origin_name(origin) not in allowed:
        return f"origin '{origin[:100]}' is not allowed (add its host to {ALLOWED_HOSTS_ENV})"
    return None


def check_token(token: str) -> str:
    """`token` if usable as a console token, else GuardConfigError."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,128}", token):
        raise GuardConfigError(f"{TOKEN_ENV}: use 16-128 letters, digits, '_' or '-'")
    return token


def _cookie(headers: Mapping[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class HostGuard:
    """ASGI middleware: HTTP requests and websocket upgrades with a foreign Host or Origin get 403 (and,
    with a token configured, those without the token)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] | None = None, token: str | None = None) -> None:
        self.app = app
        if allowed is None:
            from streamlit import config

            allowed = allowed_hosts(bound_address=config.get_option("server.address"))
            token = os.environ.get(TOKEN_ENV) or None
        self.allowed = frozenset(allowed)
        self.token = check_token(token) if token else None
        # one cookie name per token: cookies ignore ports, so two consoles on 127.0.0.1 must not collide
        self.cookie = f"{TOKEN_COOKIE}_{hashlib.sha256(self.token.encode()).hexdigest()[:8]}" if token else ""

    def _token_state(self, scope: Scope, headers: Mapping[str, str]) -> str:
        """'ok' (cookie or exempt path), 'query' (valid ?token=, to be turned into a cookie) or 'missing'."""
        if self.token is None or scope.get("path", "") in TOKEN_FREE_PATHS:
            return "ok"
        cookie = _cookie(headers, self.cookie)
        if cookie is not None and hmac.compare_digest(cookie.encode(), self.token.encode()):
            return "ok"
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if hmac.compare_digest(query.get("token", "").encode(), self.token.encode()):
            return "query"
        return "missing"

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            name = key.decode("latin-1").lower()
            if name in ("host", "origin") and name in headers:
                headers[name] = "\x00duplicate"  # two Host headers: refuse rather than pick one
            else:
                headers[name] = value.decode("latin-1")
        reason = refusal(headers, self.allowed)
        token = self._token_state(scope, headers) if reason is None else "missing"
        if reason is None and token == "missing":
            reason = "this console needs the token from the URL it printed (?token=...)"
        if reason is None and token == "query" and scope["type"] == "http":
            rest = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k != "token"]
            location = scope.get("root_path", "") + scope.get("path", "/") + (f"?{urlencode(rest)}" if rest else "")
            await send({"type": "http.response.start", "status": 302,
                        "headers": [(b"location", location.encode("latin-1")),
                                    (b"set-cookie", f"{self.cookie}={self.token}; Path=/; HttpOnly; "
                                                    "SameSite=Strict".encode()),
                                    (b"cache-control", b"no-store"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
        elif reason is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403
        else:
            body = f"pgjobs console: {reason}\n".encode()
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": body})


def install() -> None:
    """Put HostGuard first in Streamlit's middleware stack (before its server starts)."""
    from starlette.middleware import Middleware
    from streamlit.web.server.starlette import starlette_app

    original = getattr(starlette_app, "create_streamlit_middleware", None)
    if original is None or getattr(original, "_pgjobs_guarded", False):
        if original is None:
            raise RuntimeError("this Streamlit version has no create_streamlit_middleware: the console's Host "
                               "guard cannot be installed, refusing to start")
        return

    def guarded() -> list[Middleware]:
        return [Middleware(HostGuard), *original()]

    guarded._pgjobs_guarded = True  # type: ignore[attr-defined]
    starlette_app.create_streamlit_middleware = guarded
