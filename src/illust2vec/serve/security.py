"""Request checks and response headers of the web app (a pure ASGI middleware).

* **Host check** (DNS rebinding): without a token, only requests whose
  ``Host`` is a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``) are
  answered; a page on another site that made its name resolve to
  127.0.0.1 is refused.
* **Token**: with a token (required for any non-loopback ``--host``), every
  request must carry it: ``Authorization: Bearer TOKEN``, the ``i2v_token``
  cookie, or ``?token=TOKEN`` once (answered with a redirect that sets the
  cookie, ``HttpOnly; SameSite=Strict``, and drops the token from the
  address).  Otherwise 401.
* **CSRF**: a state-changing request (any method but GET/HEAD/OPTIONS) with
  an ``Origin`` header must come from the app's own origin, and one without
  it must not be marked cross-site by ``Sec-Fetch-Site``; otherwise 403.
* **Headers** on every answer: a strict Content-Security-Policy (everything
  from this origin only, no inline script), ``nosniff``, no referrer, no
  framing, same-origin resources.  A route that sets its own header keeps it
  (the map page: the viewer's meta policy with a script nonce applies there).
"""
from __future__ import annotations

import json
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
COOKIE = "i2v_token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    return host.strip().lower() in LOOPBACK_HOSTS or host.startswith("127.")


def new_token() -> str:
    """A random token for ``--host`` other than loopback."""
    return secrets.token_urlsafe(24)


def _host_name(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[: h.find("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0] if ":" in h else h


class Guard:
    """ASGI middleware applying the checks above to ``app``; ``token`` ``None`` means loopback-only."""

    def __init__(self, app, *, token: str | None = None, csp: str = CSP) -> None:
        self.app = app
        self.token = token
        self.headers = [(k, csp.encode() if k == b"content-security-policy" else v) for k, v in HEADERS]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        problem = self._check(scope, headers, host)
        if problem is not None:
            status, msg, extra = problem
            return await self._answer(send, status, msg, extra)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in self.headers if h[0] not in have]
            await send(message)

        return await self.app(scope, receive, send_with_headers)

    def _check(self, scope, headers: dict[str, str], host: str):
        method = scope.get("method", "GET").upper()
        if self.token is None and not is_loopback(_host_name(host)):
            return 403, f"this server answers on loopback addresses only, not {host!r}", []
        if self.token is not None:
            query = scope.get("query_string", b"").decode("latin-1")
            params = parse_qsl(query, keep_blank_values=True)
            given = dict(params).get("token")
            if given is not None and method in SAFE_METHODS and secrets.compare_digest(given.encode(), self.token.encode()):
                rest = urlencode([(k, v) for k, v in params if k != "token"])
                location = scope.get("path", "/") + (f"?{rest}" if rest else "")
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                return 303, "", [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode())]
            if not self._has_token(headers):
                return 401, "a token is required: open the address printed by 'illust2vec serve'", []
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            scheme = scope.get("scheme", "http")
            if origin is not None and origin.lower() != f"{scheme}://{host}".lower():
                return 403, f"cross-origin request refused (Origin {origin!r})", []
            if origin is None and headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return 403, "cross-site request refused", []
        return None

    def _has_token(self, headers: dict[str, str]) -> bool:
        want = self.token.encode()
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and secrets.compare_digest(auth[7:].strip().encode(), want):
            return True
        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is just no token
            return False
        c = jar.get(COOKIE)
        return c is not None and secrets.compare_digest(c.value.encode(), want)

    async def _answer(self, send, status: int, msg: str, extra) -> None:
        body = (json.dumps({"detail": msg}) if msg else "").encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": hdrs + list(extra) + self.headers})
        await send({"type": "http.response.body", "body": body})

