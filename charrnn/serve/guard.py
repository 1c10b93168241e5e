"""The checks in front of the HTTP API (charrnn/serve/app.py), as one ASGI middleware:

* a body is counted as it arrives and refused with 413 once it passes ``max_body`` bytes (or
  at once, when its Content-Length says so), before the app reads any of it;
* a cross-origin request (an Origin header that is not the server's own) is refused with 403
  unless ``cors_origin`` names that origin; Starlette's CORSMiddleware then answers it;
* on a loopback address, a Host header that is not a loopback name is refused with 403: DNS
  rebinding would otherwise let a page of another site look "same-origin".

Starlette is imported here at the top: only charrnn/serve/app.py imports this module.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Optional
from urllib.parse import urlsplit

from charrnn.config import ServeConfig

LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}
BODY_METHODS = ("POST", "PUT", "PATCH")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name, IPv6 with or without brackets) is this machine
    only: 127.0.0.0/8, ::1 or localhost."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in LOOPBACK_NAMES


class Guard:
    """ASGI middleware: ``Guard(app, settings)`` (see the module docstring); refusals are
    JSON ``{"error": "..."}`` with the status, and close the connection."""

    def __init__(self, app, settings: ServeConfig):
        self.app, self.settings = app, settings
        self.local = is_loopback(settings.host)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = self._problem(scope)
        if problem:
            return await refuse(send, *problem)
        if scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        body = await read_body(receive, self.settings.max_body)
        if body is None:
            return await refuse(send, 413, self._too_large())
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()        # (then: the disconnect, when it comes)
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _problem(self, scope) -> Optional[tuple[int, str]]:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host, origin = headers.get("host", ""), headers.get("origin")
        if self.local and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            return 403, f"Host {host!r} is not this machine: use 127.0.0.1 or localhost"
        if origin and urlsplit(origin).netloc != host and origin != self.settings.cors_origin:
            return 403, (f"cross-origin requests are refused (this one from {origin}): start "
                         f"the server with --cors-origin {origin} to allow that page")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_body:
            return 413, self._too_large()
        return None

    def _too_large(self) -> str:
        return f"the body is larger than {self.settings.max_body} bytes (the server's --max-body)"


async def read_body(receive, limit: int) -> Optional[bytes]:
    """The request body, counted as it arrives: None once it passes ``limit`` bytes (the rest
    is never read) or when the client goes away."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
