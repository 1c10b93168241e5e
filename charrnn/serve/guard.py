"""The checks in front of the HTTP API (charrnn/serve/app.py), as one ASGI middleware:

* a body is counted as it arrives and refused with 413 once it passes ``max_body`` bytes (or
  at once, when its Content-Length says so), before the app reads any of it; a JSON body with
  NaN, Infinity or a number too large for a float (1e1000) is refused with 422;
* with API keys (--api-key, --api-key-file, CHARRNN_API_KEY), every path under /v1/ needs
  ``Authorization: Bearer KEY``, compared in constant time; 401 otherwise. /health, the
  playground page, /docs and /openapi.json do not: they show no model output;
* a cross-origin request (an Origin header that is not the server's own) is refused with 403
  unless ``cors_origin`` names that origin (or is ``*``); Starlette's CORSMiddleware answers it;
* with --allowed-hosts, a Host header not listed is refused with 400; without it, on a loopback
  address, a Host header that is not a loopback name is refused with 403: DNS rebinding would
  otherwise let a page of another site look "same-origin".

Errors are JSON ``{"error": "..."}`` of bounded size; under the OpenAI-compatible paths
(OPENAI_PATHS) they take OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from charrnn.config import ServeConfig
from charrnn.errors import CharRNNError

LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}
BODY_METHODS = ("POST", "PUT", "PATCH")
OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/models")
KEY_VARIABLE = "CHARRNN_API_KEY"
MAX_MESSAGE = 500          # characters of an error message; longer ones are cut
OPENAI_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
                503: "server_error"}


def api_keys(settings: ServeConfig) -> list[str]:
    """The API keys the server accepts: --api-key, the lines of --api-key-file (blank lines
    and # comments skipped) and $CHARRNN_API_KEY; [] for none. Raises CharRNNError for a file
    that cannot be read or holds no key, or a key with spaces or non-ASCII characters."""
    keys = [settings.api_key] if settings.api_key else []
    if settings.api_key_file:
        try:
            text = Path(settings.api_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CharRNNError(f"cannot read --api-key-file {settings.api_key_file}: "
                               f"{getattr(err, 'strerror', None) or err}") from None
        found = [line.strip() for line in text.splitlines()
                 if line.strip() and not line.strip().startswith("#")]
        if not found:
            raise CharRNNError(f"--api-key-file {settings.api_key_file} holds no key")
        keys += found
    if os.environ.get(KEY_VARIABLE):
        keys.append(os.environ[KEY_VARIABLE].strip())
    for key in keys:
        if not key.isascii() or not key.isprintable() or " " in key:
            raise CharRNNError("an API key must be printable ASCII without spaces")
    return list(dict.fromkeys(keys))


def host_list(settings: ServeConfig) -> Optional[set[str]]:
    """--allowed-hosts as a set of lower-case names; None when not given."""
    if not settings.allowed_hosts:
        return None
    return {name.strip().lower() for name in settings.allowed_hosts.split(",") if name.strip()}


def error_body(path: str, status: int, message: str) -> dict:
    """The JSON of an error answer at ``path``: {"error": message} (cut to MAX_MESSAGE
    characters), in OpenAI's shape under OPENAI_PATHS."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 3] + "..."
    if not path.startswith(OPENAI_PATHS):
        return {"error": message}
    code = {401: "invalid_api_key", 404: "not_found", 413: "request_too_large",
            503: "server_busy"}.get(status)
    return {"error": {"message": message, "type": OPENAI_TYPES.get(
        status, "invalid_request_error"), "param": None, "code": code}}


class NotFinite(ValueError):
    """A JSON number that a float cannot hold, or NaN/Infinity (not JSON at all)."""


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise NotFinite(f"the number {text[:40]} is too large")
    return value


def _constant(name: str):
    raise NotFinite(f"{name} is not a JSON number")


def json_problem(body: bytes) -> Optional[str]:
    """Why ``body`` is refused although Python's json module reads it (NaN, Infinity,
    1e1000, an integer of more than 4300 digits), or None (also for a body that is not JSON
    at all: the app says what is wrong with it)."""
    try:
        json.loads(body, parse_constant=_constant, parse_float=_finite)
    except NotFinite as err:
        return f"the body is not valid JSON: {err}"
    except json.JSONDecodeError:
        return None
    except (ValueError, RecursionError) as err:
        return f"the body is not valid JSON: {str(err)[:80]}"
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name, IPv6 with or without brackets) is this machine
    only: 127.0.0.0/8, ::1 or localhost."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in LOOPBACK_NAMES


class Guard:
    """ASGI middleware: ``Guard(app, settings)`` (see the module docstring); refusals are
    JSON errors (error_body) with the status, and close the connection. The client a request
    counts against (charrnn/serve/scheduler.py) goes to ``scope["state"]["client"]``: the key's
    number when the server has several keys, else the address."""

    def __init__(self, app, settings: ServeConfig):
        self.app, self.settings = app, settings
        self.local = is_loopback(settings.host)
        self.keys = [key.encode() for key in api_keys(settings)]
        self.hosts = host_list(settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        problem = self._problem(scope)
        if problem:
            return await refuse(send, path, *problem)
        if scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        body = await read_body(receive, self.settings.max_body)
        if body is None:
            return await refuse(send, path, 413, self._too_large())
        if body is GONE:
            return None
        bad_json = json_problem(body) if body.strip() else None
        if bad_json:
            return await refuse(send, path, 400 if path.startswith(OPENAI_PATHS) else 422,
                                bad_json)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()        # (then: the disconnect, when it comes)
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _problem(self, scope) -> Optional[tuple]:
        """(status, message[, headers]) of a refusal, or None; sets the request's client."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host, origin = headers.get("host", ""), headers.get("origin")
        name = (urlsplit(f"//{host}").hostname or "") if "@" not in host else "?"
        if self.hosts is not None and name not in self.hosts:
            return 400, f"Host {host!r} is not one this server answers to (its --allowed-hosts)"
        if self.hosts is None and self.local and not is_loopback(name):
            return 403, f"Host {host!r} is not this machine: use 127.0.0.1 or localhost"
        if origin and urlsplit(origin).netloc != host and \
                self.settings.cors_origin not in (origin, "*"):
            return 403, (f"cross-origin requests are refused (this one from {origin}): start "
                         f"the server with --cors-origin {origin} to allow that page")
        client = (scope.get("client") or ("unknown", 0))[0]
        if self.keys and scope.get("path", "").startswith("/v1/") and \
                scope["method"] != "OPTIONS":
            number = self._key_number(headers.get("authorization", ""))
            if number is None:
                why = "the API key sent is not one this server accepts" \
                    if headers.get("authorization") else "this server needs an API key"
                return 401, f"{why}: send the header 'Authorization: Bearer KEY'", \
                    {"WWW-Authenticate": "Bearer"}
            client = f"key {number}" if len(self.keys) > 1 else client
        scope.setdefault("state", {})["client"] = client
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_body:
            return 413, self._too_large()
        return None

    def _key_number(self, authorization: str) -> Optional[int]:
        """The index of the key in ``Bearer KEY``, compared in constant time, or None."""
        scheme, _, given = authorization.partition(" ")
        given_bytes = given.strip().encode("latin-1", "replace")
        found = None
        for number, key in enumerate(self.keys):     # (every key compared: no early exit)
            if hmac.compare_digest(given_bytes, key) and scheme.lower() == "bearer":
                found = number
        return found

    def _too_large(self) -> str:
        return f"the body is larger than {self.settings.max_body} bytes (the server's --max-body)"


GONE = object()      # read_body: the client went away


async def read_body(receive, limit: int):
    """The request body (bytes), counted as it arrives: None once it passes ``limit`` bytes
    (the rest is never read), GONE when the client goes away (or its body timed out)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def refuse(send, path: str, status: int, message: str,
                 headers: Optional[dict] = None) -> None:
    """Send the error answer (error_body) and close the connection."""
    body = json.dumps(error_body(path, status, message)).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})
