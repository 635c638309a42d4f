"""The server's guard, a plain ASGI middleware in front of every route.

1. Host check (no token, loopback only): the ``Host`` header must name a loopback address, so
   a web page on another site cannot reach the server through DNS rebinding.
2. Token (when the server has one): accepted as ``Authorization: Bearer T``, ``Authorization:
   Token T`` (Label Studio's form), HTTP Basic with password ``T`` (Label Studio's ML backend
   auth), ``X-Samkit-Token: T``, the cookie ``samkit_token`` or ``?token=T`` (the page's first
   load, which then sets the cookie, HttpOnly and SameSite=Strict). Compared in constant time.
3. Request bodies above ``max_upload_bytes`` are refused with 413, from ``Content-Length``
   before any byte is read, or while a chunked body is read.
4. Any exception that escapes a route becomes a JSON 500 with an error id (the traceback goes to
   the server log only); cross-origin isolation headers are added so onnxruntime-web may use
   SharedArrayBuffer.
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
import uuid
from http.cookies import SimpleCookie
from typing import Optional
from urllib.parse import parse_qs

from .config import is_loopback
from .errors import HTTPProblem

log = logging.getLogger("samkit.server")
COOKIE = "samkit_token"
ISOLATION = [(b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-embedder-policy", b"require-corp"),
             (b"x-content-type-options", b"nosniff")]


class BodyTooLarge(HTTPProblem):
    """A body over the cap, found while reading it (answered 413 by the app's HTTPProblem handler)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over this server's limit of {limit:,} bytes. Fix: send a "
                              "smaller file, or start the server with a larger --max-upload.")


def _json(status: int, message: str, extra_headers=()) -> tuple:
    body = json.dumps({"error": message, "status": status}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *ISOLATION, *extra_headers]
    return status, headers, body


def presented_token(scope) -> Optional[str]:
    """The token a request carries, in any of the accepted places (None when none)."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "token") and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            return base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    if headers.get("x-samkit-token"):
        return headers["x-samkit-token"]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    if "cookie" in headers:
        jar = SimpleCookie()
        try:
            jar.load(headers["cookie"])
        except Exception:  # noqa: BLE001 - a malformed cookie header is simply no token
            return None
        if COOKIE in jar:
            return jar[COOKIE].value
    return None


class Guard:
    """ASGI middleware: host check, token, body cap, JSON errors (module docstring)."""

    def __init__(self, app, token: Optional[str], max_body: int, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.max_body = int(max_body)
        self.loopback_only = loopback_only

    async def _send_problem(self, send, status: int, message: str, extra=()) -> None:
        status, headers, body = _json(status, message, extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope) -> Optional[tuple]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is None and self.loopback_only:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if host and not is_loopback(name):
                return 403, (f"the Host header {host!r} is not a loopback name; this server (no token) answers "
                             "loopback requests only. Fix: open http://127.0.0.1:PORT/, or start it with --token.")
        if self.token is not None:
            given = presented_token(scope)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                return 401, ("a valid token is required. Fix: send 'Authorization: Bearer TOKEN' (or open the page "
                             "as /?token=TOKEN; Label Studio: basic auth with the token as password).")
        length = headers.get("content-length")
        if length is not None:
            try:
                if int(length) > self.max_body:
                    return 413, (f"the request body is {int(length):,} bytes, over this server's limit of "
                                 f"{self.max_body:,}. Fix: send a smaller file, or start the server with a larger "
                                 "--max-upload.")
            except ValueError:
                return 400, "the Content-Length header is not a number. Fix: send a valid request."
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            extra = [(b"www-authenticate", b'Bearer realm="samkit"')] if refusal[0] == 401 else []
            return await self._send_problem(send, refusal[0], refusal[1], extra)
        seen = {"body": 0, "started": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen["body"] += len(message.get("body", b""))
                if seen["body"] > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def isolated_send(message):
            if message["type"] == "http.response.start":
                seen["started"] = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = dict(message, headers=list(message.get("headers", []))
                               + [h for h in ISOLATION if h[0] not in names])
                if scope["path"] == "/" and self.token is not None and "token=" in scope.get("query_string",
                                                                                          b"").decode("latin-1"):
                    cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()
                    message["headers"].append((b"set-cookie", cookie))
            await send(message)

        try:
            await self.app(scope, counted_receive, isolated_send)
        except BodyTooLarge:
            if not seen["started"]:
                await self._send_problem(send, 413, f"the request body is over this server's limit of "
                                                    f"{self.max_body:,} bytes. Fix: send a smaller file, or start "
                                                    "the server with a larger --max-upload.")
        except Exception:  # noqa: BLE001 - last line of defence: JSON, never a traceback to the client
            if seen["started"]:
                return  # answered (and logged) by the app's own handler; starlette re-raises after answering
            error_id = uuid.uuid4().hex[:8]
            log.exception("internal error %s on %s %s", error_id, scope.get("method"), scope.get("path"))
            await self._send_problem(send, 500, f"internal error {error_id} (the server log has the details). "
                                                    "Fix: report it with the log lines of that id.")
