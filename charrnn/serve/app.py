"""The HTTP API of ``charrnn serve``, on FastAPI: every request is a Request to one sampling
Engine (charrnn/sampling/engine.py) running in its own thread, so concurrent requests are
stepped together (continuous batching).

    POST /v1/generate   SampleConfig's fields (same names, defaults, ranges) + prime + stream;
                        {"texts": [...], "stopped": [...], "seed": s}, or with "stream": true
                        Server-Sent Events: data {"sample": i, "text": "..."} as text comes,
                        then an "end" event with what the plain answer holds
    GET /v1/info        the model, its vocabulary and metrics, the sampling defaults, limits
    GET /health         {"status": "ok", "running": rows, "waiting": requests}
    GET /               the playground: one static page (charrnn/serve/playground.html)
    GET /docs, /openapi.json   from FastAPI

This module imports FastAPI at the top: only charrnn/serve/server.py imports it, and
api.serve imports that inside the function, so ``import charrnn`` never loads the serving stack.
"""
import asyncio
import dataclasses
import json
import secrets
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Optional

from charrnn.errors import optional_import

# First, alone: without the serve extra, one clear error instead of a traceback.
optional_import("fastapi", "serve", "charrnn serve")
from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.middleware.cors import CORSMiddleware
from pydantic import ConfigDict, Field, create_model

from charrnn.config import SampleConfig, ServeConfig
from charrnn.sampling.engine import Busy, Engine, Request
from charrnn.errors import CharRNNError, OptionError
from charrnn.serve.guard import Guard
from charrnn.options import declared
from charrnn.version import __version__

FLUSH_INTERVAL = 0.05   # seconds: a stream sends at most 20 events a second, each with all
                        # the characters that came meanwhile (fewer, larger writes under load)
JS_SAFE_INTEGER = 2**53
NOT_PER_REQUEST = {"precision"}    # the server's --precision: one for the whole batch
PAGE_POLICY = ("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "img-src data:")   # the playground loads nothing from the network


def request_schema():
    """The body of POST /v1/generate as a pydantic model, built from SampleConfig's
    declarations (minus precision): unknown fields and wrong types are refused (strict), the
    ranges are checked by SampleConfig.validate, so they are declared once."""
    fields: dict[str, Any] = {
        "prime": (str, Field("", description="Text to start from (read, not generated)."))}
    for item in declared(SampleConfig):
        if item.name not in NOT_PER_REQUEST:
            kind = Optional[item.type] if item.optional else item.type
            limits = f" ({item.spec.range_text()})" if item.spec.bounded else ""
            fields[item.name] = (kind, Field(item.default,
                                             description=item.spec.help + limits))
    fields["stream"] = (bool, Field(False, description="Send the text as Server-Sent Events "
                                                       "as it is generated."))
    return create_model("GenerateRequest", __config__=ConfigDict(extra="forbid", strict=True),
                        **fields)


class EventStream:
    """The buffer behind one request's answer (its Server-Sent Events, or the whole JSON at the
    end): carries the request's characters from the engine's thread to the event loop. The
    engine calls ``on_text`` and ``on_end``; ``take`` waits for what came since last time."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.event = loop, asyncio.Event()
        self.pieces: list[tuple[int, str]] = []
        self.waiting = self.ended = False

    def on_text(self, sample: int, char: str) -> None:
        self.pieces.append((sample, char))
        if self.waiting:                 # wake the reader once, not once per character
            self._wake()

    def on_end(self, _request: Request) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        self.waiting = False
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:             # the loop is closed: nobody is listening
            pass

    async def take(self) -> tuple[dict[int, str], bool]:
        """({sample: text} that came since the last call, whether the request has ended)."""
        self.waiting = True              # (set first: a character that comes meanwhile wakes)
        if not self.pieces and not self.ended:
            await self.event.wait()
        self.waiting = False             # no wake-ups while the caller sends and sleeps
        self.event.clear()
        ended = self.ended               # read before the pieces: none can come after the end
        pieces, self.pieces = self.pieces, []
        texts: dict[int, str] = {}
        for sample, char in pieces:
            texts[sample] = texts.get(sample, "") + char
        return texts, ended


def error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _sse(event: Optional[str], data: dict) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"


def _answer(request: Request) -> dict:
    return {"texts": [request.prime + "".join(t) for t in request.texts],
            "stopped": request.stopped, "seed": request.seed}


async def _events(stream: EventStream, request: Request):
    """The Server-Sent Events of a streaming request. When the client goes away, Starlette
    cancels this generator: ``finally`` frees the request's slots at the engine's next step."""
    try:
        ended = False
        while not ended:
            texts, ended = await stream.take()
            for sample, text in texts.items():
                yield _sse(None, {"sample": sample, "text": text})
            if not ended:
                await asyncio.sleep(FLUSH_INTERVAL)
        if request.error is not None:
            yield _sse("error", {"error": str(request.error)})
        else:
            yield _sse("end", _answer(request))
    finally:
        request.cancel()


def create_app(net, tokenizer, checkpoint: dict, settings: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``net`` (a CharRNN) with ``tokenizer``; ``checkpoint`` is what
    /v1/info shows of it ({"folder", "config"}). The engine starts and stops with the app's
    lifespan (``with TestClient(app)`` or the server)."""
    engine = Engine(net, tokenizer, settings.max_batch, settings.precision, settings.max_queue)

    @asynccontextmanager
    async def lifespan(_app):
        thread = engine.start()
        yield
        engine.close()
        await asyncio.to_thread(thread.join, 10)

    app = FastAPI(title="charrnn", version=__version__, lifespan=lifespan,
                  description="Sample text from a character-level RNN. Concurrent requests "
                              "are generated together, in one batched step.")
    app.state.engine, app.state.settings = engine, settings
    if settings.cors_origin:          # (the Guard, outside it, refuses every other origin)
        app.add_middleware(CORSMiddleware, allow_origins=[settings.cors_origin],
                           allow_methods=["GET", "POST"], allow_headers=["content-type"])
    app.add_middleware(Guard, settings=settings)
    Body = request_schema()

    @app.exception_handler(RequestValidationError)
    async def refused(_request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc.errors()),
                             "detail": json.loads(json.dumps(exc.errors(), default=str))},
                            status_code=422)

    @app.post("/v1/generate", response_model=None, summary="Generate text",
              responses={413: {}, 422: {}, 503: {}})
    async def generate(body: Body, http: HTTPRequest) -> Response:  # type: ignore[valid-type]
        return await _generate(engine, settings, body.model_dump(), http)

    @app.get("/v1/info", summary="The model, its vocabulary and metrics; the defaults")
    async def info() -> dict:
        return _info(net, tokenizer, checkpoint, settings)

    @app.get("/health", summary="Whether the server takes requests")
    async def health() -> Response:
        running, waiting = engine.load()
        status = "shutting down" if engine.closed else "ok"
        return JSONResponse({"status": status, "running": running, "waiting": waiting},
                            status_code=503 if engine.closed else 200)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        page = resources.files("charrnn.serve").joinpath("playground.html").read_text("utf-8")
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    return app


async def _generate(engine: Engine, settings: ServeConfig, fields: dict,
                    http: HTTPRequest) -> Response:
    """POST /v1/generate once the body has its fields and types: 422 for a value out of range
    or a prime the model cannot read, 503 (and Retry-After) when the queue is full."""
    prime, streaming = fields.pop("prime"), fields.pop("stream")
    try:
        config = SampleConfig(**fields, precision=settings.precision).validate()
        if config.seed is None:      # drawn here, below 2**53: JavaScript's numbers hold it
            config.seed = secrets.randbelow(JS_SAFE_INTEGER)
        if config.length > settings.max_length:
            raise OptionError("length", f"must be <= {settings.max_length} on this server "
                                        f"(its --max-length), got {config.length}")
        stream = EventStream(asyncio.get_running_loop())
        request = engine.submit(Request(prime, config, stream.on_text if streaming else None,
                                        stream.on_end))
    except Busy as busy:
        return error(503, str(busy), **{"Retry-After": "1"})
    except CharRNNError as bad:
        return error(422, str(bad))
    if streaming:
        return StreamingResponse(_events(stream, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return await _whole(stream, request, http)


async def _whole(stream: EventStream, request: Request, http: HTTPRequest) -> Response:
    """The plain answer once the request ends; a client that goes away meanwhile cancels it."""
    try:
        while True:
            try:
                await asyncio.wait_for(stream.take(), timeout=0.5)
                break
            except asyncio.TimeoutError:
                if await http.is_disconnected():
                    request.cancel()
                    return Response(status_code=499)
    finally:
        if not request.done.is_set():
            request.cancel()
    if request.error is not None:
        return error(500, str(request.error))
    return JSONResponse(_answer(request))


def _validation_message(errors: list) -> str:
    """One line from pydantic's errors: the first field and what is wrong with it."""
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "the body"
    if first.get("type") == "extra_forbidden":
        known = ", ".join(["prime", *(item.name for item in declared(SampleConfig)
                                      if item.name not in NOT_PER_REQUEST), "stream"])
        return f"unknown field {where!r}: the fields are {known}"
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON: {(first.get('ctx') or {}).get('error', '')}"
    if first.get("type") == "model_attributes_type":
        return f"the body must be a JSON object, got {first.get('input')!r}"
    return f"{where}: {first.get('msg')}, got {first.get('input')!r}"


def _info(net, tokenizer, checkpoint: dict, settings: ServeConfig) -> dict:
    config = checkpoint.get("config") or {}
    defaults = {item.name: item.default for item in declared(SampleConfig)
                if item.name not in NOT_PER_REQUEST}
    return {"charrnn_version": __version__, "checkpoint": checkpoint.get("folder"),
            "model": {**dataclasses.asdict(net.config), "parameters": net.num_params()},
            "vocabulary": "".join(tokenizer.chars), "metrics": config.get("metrics", {}),
            "sampling": {"defaults": defaults, "precision": settings.precision},
            "limits": {name: getattr(settings, name) for name in
                       ("max_batch", "max_queue", "max_length", "max_body")}}
