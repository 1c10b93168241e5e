"""The connection limits uvicorn lacks, as a subclass of its h11 protocol (one instance per
connection): uvicorn closes idle keep-alive connections itself (``timeout_keep_alive``, from
--keep-alive-timeout), but not one that never finishes its headers or its body.

* --header-timeout: from the moment a connection opens (or the first byte of its next
  request) the client has this long to finish the request's headers; else 408 and close.
* --body-timeout: once the headers are in, the client has this long to send the whole body;
  else 408 and close (the app sees the client go away).
* --max-connections: past this many open connections, a new one gets 503 and is closed at
  once, so that idle or slow connections cannot take every file descriptor and the server
  keeps answering. (What they do not stop: many addresses each under the limits; that is the
  job of a reverse proxy or a firewall, docs/serving.md.)

uvicorn is imported here at the top: only charrnn/serve/server.py imports this module.
"""
from __future__ import annotations

import json
from typing import Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from charrnn.config import ServeConfig


def _raw_answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def guarded_protocol(settings: ServeConfig, max_connections: int) -> type:
    """uvicorn's H11Protocol with the header and body timeouts of ``settings`` and a cap of
    ``max_connections`` open connections (see the module docstring); pass it as
    ``uvicorn.Config(http=...)``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"settings": settings, "max_connections": max_connections})


class GuardedH11Protocol(H11Protocol):
    """One connection, with the deadlines of the module docstring (``settings`` and
    ``max_connections`` are set by guarded_protocol)."""
    settings: ServeConfig
    max_connections: int
    timer: Optional[object] = None
    refused = False
    phase = "headers"

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.refused = True
            transport.write(_raw_answer(503, "Service Unavailable", "too many open "
                                        "connections; try again shortly"))
            transport.close()
            return
        self._arm(self.settings.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.timer is None and self.conn.their_state is h11.IDLE:
            self._arm(self.settings.header_timeout)     # a new request: its headers' time
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY and self.phase != "body":
            self._arm(self.settings.body_timeout, "body")
        elif state is not h11.IDLE and state is not h11.SEND_BODY:
            self._disarm()                               # the request is all in

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._disarm()
        super().on_response_complete()

    def _arm(self, seconds: float, phase: str = "headers") -> None:
        self._disarm()
        self.phase = phase
        self.timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = "headers"

    def _expired(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        body = self.phase == "body"
        limit = self.settings.body_timeout if body else self.settings.header_timeout
        what = "body" if body else "headers"
        self.transport.write(_raw_answer(408, "Request Timeout", f"the request's {what} did "
                                         f"not come within {limit:g} s (the server's "
                                         f"--{'body' if body else 'header'}-timeout)"))
        self.transport.close()
