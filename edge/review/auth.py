"""Who may see the review page: loopback by default, a login token beyond it.

Rules (no image leaves the machine unless configured):

* Bound to a loopback address (``127.0.0.1``, ``::1``, ``localhost``) and no token: open, but only
  for requests whose ``Host`` header names loopback — a web page elsewhere cannot reach the
  server through DNS rebinding.
* Bound to anything else: a token is required (:func:`check_bind` refuses to start without one).
* With a token (any bind address) every request must carry it: the session cookie the login form
  sets, ``Authorization: Bearer <token>``, or ``X-EdgeQC-Token: <token>``. ``?token=<token>`` on a
  page address logs in and redirects to the address without it (for a bookmark on a panel PC).

The cookie holds a SHA-256 digest of the token, is ``HttpOnly`` and ``SameSite=Strict`` (so other
sites cannot post verdicts with it). Plain HTTP: run behind TLS or on a closed line network.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import ipaddress
import json
from collections.abc import Sequence
from urllib.parse import parse_qs, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from edge.settings import ConfigError

COOKIE = "edgeqc_review"
FAIL_DELAY_S = 1.0  # answer to a wrong token, s
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``); False for ``0.0.0.0``, ``::`` and others."""
    h = host.strip().strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Raise :class:`ConfigError` if ``host`` is not loopback and no usable token is set."""
    if token is not None and len(token.strip()) < 8:
        raise ConfigError(f"review.token: {len(token.strip())} characters; expected at least 8")
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"review.host = {host!r} is not a loopback address: a login token is required "
            "(set review.token or EDGEQC_REVIEW__TOKEN, or pass --token), or bind 127.0.0.1"
        )


def _digest(token: str) -> str:
    return hashlib.sha256(b"edgeqc-review:" + token.encode()).hexdigest()


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


async def _respond(
    send: Send, status: int, body: bytes, ctype: str, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *extra]})
    await send({"type": "http.response.body", "body": body})


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>edgeqc review - login</title>
<style>body{{font:20px system-ui,sans-serif;background:#111;color:#eee;display:flex;justify-content:center;
align-items:center;height:100vh;margin:0}}form{{background:#222;padding:2em;border-radius:12px;min-width:320px}}
input,button{{font-size:22px;width:100%;padding:.6em;margin-top:.6em;box-sizing:border-box;border-radius:8px}}
button{{background:#2a6;color:#fff;border:0}}.err{{color:#f66}}</style></head><body>
<form method="post" action="/login"><h1>edgeqc review</h1><label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<input type="hidden" name="next" value="{next}"><button type="submit">Log in</button>
<p class="err" id="login-error">{error}</p></form></body></html>"""


class AccessGuard:
    """ASGI middleware enforcing the rules above; also serves ``/login`` and ``/logout``.

    Args:
        app: the wrapped ASGI application.
        token: the login token, or None (then only the loopback ``Host`` check applies).
        loopback_only: reject requests whose ``Host`` is not a loopback name (used when no token).
    """

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token or None
        self.loopback_only = loopback_only
        self._digest = _digest(self.token) if self.token else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.loopback_only and not self.token:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if not is_loopback(name):
                await _respond(send, 421, b"review page is bound to loopback; Host header refused\n", "text/plain")
                return
        if not self.token:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "/")
        if path == "/login":
            await self._login(scope, receive, send)
            return
        if path == "/logout":
            await _respond(send, 303, b"", "text/plain", [(b"location", b"/login"),
                           (b"set-cookie", f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict".encode())])
            return
        ok, presented = self._check(headers)
        if ok:
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [""])[0]
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            rest = urlencode([(k, v) for k, vs in query.items() if k != "token" for v in vs], doseq=False)
            target = path + ("?" + rest if rest else "")
            await _respond(send, 303, b"", "text/plain", [(b"location", target.encode()), self._cookie()])
            return
        if presented or given:
            await asyncio.sleep(FAIL_DELAY_S)  # a wrong token costs time: slows down guessing
        if path.startswith("/api/"):
            await _respond(send, 401, json.dumps({"detail": "login required (token)"}).encode(), "application/json")
        else:
            await _respond(send, 303, b"", "text/plain",
                           [(b"location", ("/login?" + urlencode({"next": path})).encode())])

    def _check(self, headers: dict[str, str]) -> tuple[bool, bool]:
        """(authorized, a token was presented in a header). A stale cookie counts as none."""
        assert self.token is not None
        cookie = _cookies(headers.get("cookie", "")).get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self._digest.encode()):
            return True, True
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        presented = False
        for cand in (bearer, headers.get("x-edgeqc-token", "")):
            if cand:
                presented = True
                if hmac.compare_digest(cand.encode(), self.token.encode()):
                    return True, True
        return False, presented

    def _cookie(self) -> tuple[bytes, bytes]:
        return (b"set-cookie", f"{COOKIE}={self._digest}; Path=/; HttpOnly; SameSite=Strict".encode())

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.token is not None
        if scope["method"] == "POST":
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body") or len(body) > 4096:
                    break
            form = parse_qs(body.decode("utf-8", "replace"))
            given = form.get("token", [""])[0]
            nxt = _safe_next(form.get("next", ["/"])[0])
            if given and hmac.compare_digest(given.encode(), self.token.encode()):
                await _respond(send, 303, b"", "text/plain", [(b"location", nxt.encode()), self._cookie()])
                return
            await asyncio.sleep(FAIL_DELAY_S)  # slow down guessing
            page = LOGIN_PAGE.format(next=html.escape(nxt), error="Wrong token.")
            await _respond(send, 401, page.encode(), "text/html; charset=utf-8")
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        nxt = _safe_next(query.get("next", ["/"])[0])
        page = LOGIN_PAGE.format(next=html.escape(nxt), error="")
        await _respond(send, 200, page.encode(), "text/html; charset=utf-8")
