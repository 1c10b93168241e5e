"""A real server for the tests of tests/serve/: the app on uvicorn (with the server's own
settings: charrnn/serve/server.py's uvicorn_config) in a thread, on a free port of 127.0.0.1.
A test module takes the fixture with ``from live import serve_live``."""
import contextlib
import threading
import time

import pytest

import charrnn
from charrnn.config import ServeConfig


@contextlib.contextmanager
def live_server(trained, **settings):
    """Yields (model, "http://127.0.0.1:PORT") of ``charrnn serve`` with ``settings``; the
    server is stopped at the end."""
    from charrnn.serve.app import create_app
    from charrnn.serve.server import Server, bind, uvicorn_config
    model = charrnn.load(trained, device="cpu")
    config = ServeConfig(**{"port": 0, "max_length": 300, **settings}).validate()
    app = create_app(model.net, model.tokenizer, {"folder": str(trained / "best"),
                                                  "config": model.saved_config}, config)
    sock = bind("127.0.0.1", 0)
    uvicorn_settings = uvicorn_config(app, config)
    uvicorn_settings.timeout_graceful_shutdown = 1
    server = Server(uvicorn_settings, on_exit=app.state.engine.close)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield model, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        app.state.engine.close()
        thread.join(10)


@pytest.fixture(scope="session")
def serve_live(trained):
    """live_server as a fixture: ``with serve_live(**settings) as (model, url)``."""
    return lambda **settings: live_server(trained, **settings)
