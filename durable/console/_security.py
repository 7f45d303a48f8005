"""What stands between a browser and the store: the Host check (against DNS
rebinding while on loopback), the API token (pages and actions), the CSRF token of
every action, and the headers that keep pages from being framed or running scripts
they did not come with."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "Guard",
    "Secrets",
    "is_loopback",
]

SESSION_COOKIE = "durable_session"
CSRF_COOKIE = "durable_csrf"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
OPEN_PATHS = ("/login", "/static/")  # reachable without the API token

HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only reaches this machine."""
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """``Host`` without its port: ``127.0.0.1:8233`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else ""
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Secrets:
    """The console's keys: the API token (if any) and a per-process secret that signs
    the session and CSRF cookies."""

    def __init__(self, api_token: str | None, secret: bytes | None = None) -> None:
        self.api_token = api_token or None
        self._secret = secret or secrets.token_bytes(32)

    def _sign(self, purpose: str, value: str) -> str:
        message = f"{purpose}:{value}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def session_value(self) -> str:
        """What the session cookie holds once the API token was given."""
        return self._sign("session", self.api_token or "")

    def token_ok(self, given: str) -> bool:
        """Whether ``given`` is the API token."""
        return self.api_token is not None and hmac.compare_digest(
            given.encode(), self.api_token.encode()
        )

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the API token (header) or its session cookie."""
        if self.api_token is None:
            return True
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self.token_ok(auth[7:].strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session_value().encode())

    @staticmethod
    def new_csrf_cookie() -> str:
        return secrets.token_urlsafe(24)

    def csrf_token(self, cookie: str) -> str:
        """The form token that goes with a browser's CSRF cookie."""
        return self._sign("csrf", cookie)

    def csrf_ok(self, request: Request, form_token: str) -> bool:
        """Whether a POST comes from a form this console served to this browser."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not form_token:
            return False
        if not hmac.compare_digest(form_token.encode(), self.csrf_token(cookie).encode()):
            return False
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            scheme = request.url.scheme
            if origin != f"{scheme}://{request.headers.get('host', '')}":
                return False
        return request.headers.get("sec-fetch-site", "same-origin") in {"same-origin", "none"}


class Guard:
    """ASGI middleware: the Host check, the API token, and the security headers."""

    def __init__(self, app: ASGIApp, keys: Secrets, *, loopback_only: bool) -> None:
        self.app = app
        self.keys = keys
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        if self.loopback_only and not is_loopback(_host_name(headers.get("host", ""))):
            # a name that resolves to loopback but is not ours: DNS rebinding
            return PlainTextResponse("this console answers only to a loopback host name", 421)
        if self.keys.api_token is None:
            return None
        path: str = scope["path"]
        if path == "/login" or path.startswith("/static/"):
            return None
        if self.keys.authorized(Request(scope)):
            return None
        if scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
            return RedirectResponse("/login", status_code=303)
        return PlainTextResponse("an API token is needed", 401)
