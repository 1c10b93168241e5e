"""Running the HTTP API (charrnn/serve/app.py) on uvicorn: the socket and a clean stop.

* Bound to 127.0.0.1 unless told otherwise (a note says when it is not a loopback address);
  ``port=0`` takes a free port, and ``ready(url)`` hears the one bound once it listens.
* SIGINT/SIGTERM: stop accepting, end the open streams (each gets its end event, stopped
  "shutdown"), exit normally. uvicorn's own handler raises the signal again once it has shut
  down, which would end the process with the signal's status: ``Server.handle_exit`` does not.

uvicorn is imported here at the top: api.serve imports this module inside the function, so
``import charrnn`` never loads it. It belongs to the serve extra: without it, importing this
module raises CharRNNError naming the install command (errors.optional_import).
"""
from __future__ import annotations

import signal
import socket
from typing import Callable

from charrnn.config import ServeConfig
from charrnn.errors import CharRNNError, note, optional_import
from charrnn.serve.guard import is_loopback
from charrnn.serve.app import create_app

uvicorn = optional_import("uvicorn", "serve", "charrnn serve")

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
    """A listening TCP socket on (host, port); port 0 takes a free one. Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve_until_stopped(net, tokenizer, checkpoint: dict, settings: ServeConfig,
        ready: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM (see the module docstring); ``ready(url)`` is called once
    the socket listens. Raises CharRNNError when the address cannot be bound."""
    if not is_loopback(settings.host):
        note(f"listening on {settings.host}: anyone who can reach this machine can use the "
             "model (use --host 127.0.0.1 to keep it to this machine)")
    app = create_app(net, tokenizer, checkpoint, settings)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as err:
        raise CharRNNError(f"cannot listen on {settings.host}:{settings.port}: "
                           f"{err.strerror or err}; choose another --port (0: any free one) "
                           "or --host") from None
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=GRACE_SECONDS)
    server = Server(config, on_exit=app.state.engine.close)
    ready(f"http://{f'[{host}]' if ':' in host else host}:{port}/")
    server.run(sockets=[sock])
