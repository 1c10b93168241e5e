"""Running the HTTP API (charrnn/serve/app.py) on uvicorn: the socket and a clean stop.

* Bound to 127.0.0.1 unless told otherwise (a note says when it is not a loopback address,
  and warns when it has no API key); ``port=0`` takes a free port, and ``ready(url)`` hears
  an address a browser can open (127.0.0.1 for 0.0.0.0) once it listens.
* The listening socket is made as a TCP socket (IPPROTO_TCP), so that asyncio sets
  TCP_NODELAY on every connection: no Nagle/delayed-ACK stall on keep-alive connections.
* The connection limits: uvicorn's keep-alive timeout, the header and body timeouts and the
  connection cap of charrnn/serve/connections.py; X-Forwarded-For only from
  --forwarded-allow-ips (uvicorn's proxy headers), off by default.
* SIGINT/SIGTERM: stop accepting, end the open streams (each gets its end event, stopped
  "shutdown"), exit normally. uvicorn's own handler raises the signal again once it has shut
  down, which would end the process with the signal's status: ``Server.handle_exit`` does not.

uvicorn is imported here at the top: api.serve imports this module inside the function, so
``import charrnn`` never loads it. It belongs to the serve extra: without it, importing this
module raises CharRNNError naming the install command (errors.optional_import).
"""
from __future__ import annotations

import ipaddress
import signal
import socket
from typing import Callable, Optional

from charrnn.config import ServeConfig
from charrnn.errors import CharRNNError, note, optional_import
from charrnn.serve.guard import api_keys, is_loopback
from charrnn.serve.app import create_app

uvicorn = optional_import("uvicorn", "serve", "charrnn serve")
from charrnn.serve.connections import guarded_protocol  # noqa: E402 (after the check above)

GRACE_SECONDS = 5       # open connections get this long to finish once streams have ended


class Server(uvicorn.Server):
    """uvicorn's server, stopped by SIGINT/SIGTERM with status 0 after the streams end."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]):
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame) -> None:
        # Not uvicorn's: it records the signal and raises it again after shutting down.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True       # a second Ctrl-C: do not wait for connections
        self.should_exit = True
        self.on_exit()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), with TCP_NODELAY (and protocol IPPROTO_TCP, so
    that asyncio sets it on every accepted connection too); port 0 takes a free one. Raises
    OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def browsable_url(host: str, port: int) -> str:
    """An address a browser can open for a server bound to (host, port): 0.0.0.0 and ::
    (every address) become 127.0.0.1 and [::1]."""
    try:
        unspecified = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        unspecified = False
    if unspecified:
        host = "::1" if ":" in host else "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def start_notes(settings: ServeConfig, keys: list, port: Optional[int] = None) -> list[str]:
    """What the operator should know at start (each one line): a non-loopback address, and
    without an API key, that anyone who reaches it can use the model."""
    if is_loopback(settings.host):
        return []
    notes = [f"listening on {settings.host}: other machines can reach this server"
             + (f" (e.g. http://{socket.gethostname()}:{port}/)" if port is not None else "")]
    if not keys:
        notes.append("warning: no API key: anyone who can reach this machine can use the "
                     "model; set --api-key, --api-key-file or CHARRNN_API_KEY (or use "
                     "--host 127.0.0.1 to keep it to this machine)")
    return notes


def connection_cap(settings: ServeConfig) -> int:
    """--max-connections, else the open-file limit less 64 (file descriptors for the model,
    logs and the listening socket), at most 1,000 and at least 16."""
    if settings.max_connections is not None:
        return settings.max_connections
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 1000
    return 1000 if soft == resource.RLIM_INFINITY else max(16, min(1000, soft - 64))


def uvicorn_config(app, settings: ServeConfig) -> "uvicorn.Config":
    """uvicorn's settings for ``app``: the timeouts, the connection cap, trusted proxies."""
    return uvicorn.Config(app, log_level="warning", lifespan="on",
                          timeout_graceful_shutdown=GRACE_SECONDS,
                          http=guarded_protocol(settings, connection_cap(settings)),
                          timeout_keep_alive=settings.keep_alive_timeout,
                          proxy_headers=bool(settings.forwarded_allow_ips),
                          forwarded_allow_ips=settings.forwarded_allow_ips or "",
                          server_header=False)


def serve_until_stopped(net, tokenizer, checkpoint: dict, settings: ServeConfig,
        ready: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM (see the module docstring); ``ready(url)`` is called once
    the socket listens. Raises CharRNNError when the address cannot be bound or an API key
    file cannot be read."""
    keys = api_keys(settings)
    app = create_app(net, tokenizer, checkpoint, settings)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as err:
        raise CharRNNError(f"cannot listen on {settings.host}:{settings.port}: "
                           f"{err.strerror or err}; choose another --port (0: any free one) "
                           "or --host") from None
    host, port = sock.getsockname()[:2]
    for line in start_notes(settings, keys, port):
        note(line)
    server = Server(uvicorn_config(app, settings), on_exit=app.state.engine.close)
    ready(browsable_url(host, port))
    server.run(sockets=[sock])
