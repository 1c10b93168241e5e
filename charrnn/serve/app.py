"""The HTTP API of ``charrnn serve``, on FastAPI: every request is a Request to one sampling
Engine (charrnn/sampling/engine.py) running in its own thread, so concurrent requests are
stepped together (continuous batching).

    POST /v1/generate   SampleConfig's fields (same names, defaults, ranges) + prime + stream;
                        {"texts": [...], "stopped": [...], "seed": s}, or with "stream": true
                        Server-Sent Events: data {"sample": i, "text": "..."} as text comes,
                        then an "end" event with what the plain answer holds
    GET /v1/info        the model (its name, not its folder), vocabulary and metrics, the
                        sampling defaults, limits
    /v1/completions, /v1/models   OpenAI-compatible (charrnn/serve/completions.py)
    GET|HEAD /health    {"status": "ok", "running": rows, "waiting": requests}
    GET|HEAD /          the playground: one static page (charrnn/serve/playground.html)
    GET /openapi.json   the contract: ranges, status codes, content types as the server
                        behaves (charrnn/serve/contract.py); GET /docs: it as one page,
                        nothing loaded from the network

Requests run on a FairEngine (charrnn/serve/scheduler.py): per-client shares, fair admission.
Every error is JSON {"error": "..."} of bounded size (OpenAI's shape under /v1/completions).

This module imports FastAPI at the top: only charrnn/serve/server.py imports it, and
api.serve imports that inside the function, so ``import charrnn`` never loads the serving stack.
"""
import asyncio
import dataclasses
import json
import secrets
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from charrnn.errors import optional_import

# First, alone: without the serve extra, one clear error instead of a traceback.
optional_import("fastapi", "serve", "charrnn serve")
from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from pydantic import ConfigDict, Field, create_model

from charrnn.config import SampleConfig, ServeConfig
from charrnn.sampling.engine import Busy, Request
from charrnn.errors import CharRNNError, OptionError
from charrnn.serve.completions import add_openai_routes, completion_schema
from charrnn.serve.contract import (HTTP_SEED_MAX, Health, Whole, add_contract, docs_page,
                                    error_responses, event_stream, vocabulary_pattern)
from charrnn.serve.guard import Guard, OPENAI_PATHS, api_keys, error_body
from charrnn.serve.scheduler import FairEngine, ServeRequest, client_slots
from charrnn.options import declared
from charrnn.version import __version__

FLUSH_INTERVAL = 0.05   # seconds: a stream sends at most 20 events a second, each with all
                        # the characters that came meanwhile (fewer, larger writes under load)
JS_SAFE_INTEGER = 2**53
NOT_PER_REQUEST = {"precision"}    # the server's --precision: one for the whole batch
PAGE_POLICY = ("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "img-src data:")   # the playground loads nothing from the network


def request_schema(settings: Optional[ServeConfig] = None, pattern: Optional[str] = None):
    """The body of POST /v1/generate as a pydantic model, built from SampleConfig's
    declarations (minus precision): unknown fields and wrong types are refused (strict), the
    ranges are checked by SampleConfig.validate, so they are declared once; the JSON schema
    states them (minimum, maximum), with this server's limits from ``settings`` and the
    vocabulary's ``pattern`` for the prime."""
    settings = settings or ServeConfig()
    server_high = {"length": settings.max_length, "num_samples": client_slots(settings),
                   "seed": HTTP_SEED_MAX}
    prime_limits = {"maxLength": settings.max_prime, **({"pattern": pattern} if pattern else {})}
    fields: dict[str, Any] = {"prime": (str, Field("", json_schema_extra=prime_limits,
                                                   description="Text to start from (read, "
                                                               "not generated)."))}
    for item in declared(SampleConfig):
        if item.name not in NOT_PER_REQUEST:
            base = Whole if item.type is int else item.type
            kind = Optional[base] if item.optional else base
            limits = f" ({item.spec.range_text()})" if item.spec.bounded else ""
            extra = _schema_range(item, server_high.get(item.name))
            default = min(item.default, settings.max_length) if item.name == "length" \
                else item.default
            if item.name == "stop":
                extra = {"minLength": 1, "maxLength": settings.max_stop}
            fields[item.name] = (kind, Field(default, json_schema_extra=extra or None,
                                             description=item.spec.help + limits))
    fields["stream"] = (bool, Field(False, description="Send the text as Server-Sent Events "
                                                       "as it is generated."))
    return create_model("GenerateRequest", __config__=ConfigDict(extra="forbid", strict=True),
                        **fields)


def _schema_range(item, server_high: Optional[int]) -> dict:
    """An option's range as JSON schema keywords (minimum, exclusiveMaximum...), the
    server's own limit (``server_high``) where it is lower."""
    spec, extra = item.spec, {}
    if item.type not in (int, float):
        return extra
    if spec.low is not None:
        extra["exclusiveMinimum" if spec.low_open else "minimum"] = _bound(item, spec.low)
    high = spec.high if server_high is None else min(server_high, spec.high or server_high)
    if high is not None:
        extra["exclusiveMaximum" if spec.high_open and server_high is None else
              "maximum"] = _bound(item, high)
    return extra


def _bound(item, value):
    return int(value) if item.type is int else value


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


def error(status: int, message: str, path: str = "/v1/generate",
          **headers: str) -> JSONResponse:
    """A JSON error answer (guard.error_body: bounded, OpenAI's shape under OPENAI_PATHS)."""
    return JSONResponse(error_body(path, status, message), status_code=status,
                        headers=headers)


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


def model_name(checkpoint: dict, settings: ServeConfig) -> str:
    """The served model's name: --name, else its run folder's (the folder above best/, last/
    or a step-N/ snapshot)."""
    if settings.name:
        return settings.name
    folder = Path(checkpoint.get("folder") or "model")
    if folder.name in ("best", "last") or folder.name.startswith("step-"):
        folder = folder.parent
    return folder.name or "model"


class Service:
    """What the routes share: the engine, the settings, the model's ``name``; ``submit`` and
    ``wait`` run one request, ``errors`` documents the error answers of a route."""

    def __init__(self, engine: FairEngine, settings: ServeConfig, name: str, has_keys: bool):
        self.engine, self.settings, self.name, self.has_keys = engine, settings, name, has_keys

    def submit(self, prime: str, config: SampleConfig, stops: list, http: HTTPRequest,
               streaming: bool) -> tuple[EventStream, ServeRequest]:
        """Queue a request. Raises CharRNNError (a bad request) or Busy (no room)."""
        config.validate()
        if config.seed is not None and config.seed > HTTP_SEED_MAX:
            raise OptionError("seed", f"must be <= {HTTP_SEED_MAX} over HTTP (2**53 - 1, the "
                                      f"largest JSON holds exactly), got {config.seed}")
        if config.length > self.settings.max_length:
            raise OptionError("length", f"must be <= {self.settings.max_length} on this server "
                                        f"(its --max-length), got {config.length}")
        if len(prime) > self.settings.max_prime:
            raise CharRNNError(f"the prime is {len(prime)} characters long; this server reads "
                               f"at most {self.settings.max_prime} (its --max-prime)")
        for stop in stops:
            if len(stop) > self.settings.max_stop:
                raise CharRNNError(f"a stop text is {len(stop)} characters long; this server "
                                   f"takes at most {self.settings.max_stop} (its --max-stop)")
        if config.seed is None:      # drawn here, below 2**53: JavaScript's numbers hold it
            config.seed = secrets.randbelow(JS_SAFE_INTEGER)
        stream = EventStream(asyncio.get_running_loop())
        client = getattr(http.state, "client", None) or (http.client.host if http.client
                                                         else "unknown")
        request = self.engine.submit(ServeRequest(prime, config, client, stops,
                                                  stream.on_text if streaming else None,
                                                  stream.on_end))
        return stream, request

    async def wait(self, stream: EventStream, request: Request,
                   http: HTTPRequest) -> Optional[Response]:
        """Wait for the request's end; a client that goes away meanwhile cancels it (then
        the answer is a 499 Response, else None)."""
        return await _whole(stream, request, http)

    def errors(self, *codes: int, ok: Optional[dict] = None, openai: bool = False) -> dict:
        """The OpenAPI ``responses`` of a route: ``codes`` (401 only with keys), the guard's
        400/403/408/503, and ``ok``, the content types of the 200 answer; ``openai``: errors
        in OpenAI's shape."""
        return error_responses(codes, self.has_keys, ok, openai=openai)


def create_app(net, tokenizer, checkpoint: dict, settings: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``net`` (a CharRNN) with ``tokenizer``; ``checkpoint`` is
    {"folder", "config"} (/v1/info shows the folder's name, not its path). The engine starts
    and stops with the app's lifespan (``with TestClient(app)`` or the server). Raises
    CharRNNError for an API key file that cannot be read."""
    engine = FairEngine(net, tokenizer, settings)

    @asynccontextmanager
    async def lifespan(_app):
        thread = engine.start()
        yield
        engine.close()
        await asyncio.to_thread(thread.join, 10)

    app = FastAPI(title="charrnn", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description="Sample text from a character-level RNN. "
                  "Concurrent requests are generated together, in one batched step.")
    if settings.cors_origin:          # (the Guard, outside it, refuses every other origin)
        app.add_middleware(CORSMiddleware, allow_origins=[settings.cors_origin],
                           allow_methods=["GET", "POST"],
                           allow_headers=["content-type", "authorization"])
    keys = api_keys(settings)                   # (read here: a bad key file fails early)
    app.add_middleware(Guard, settings=settings)
    service = Service(engine, settings, model_name(checkpoint, settings), bool(keys))
    app.state.engine, app.state.settings, app.state.service = engine, settings, service
    _add_error_handlers(app)
    pattern = vocabulary_pattern(tokenizer)
    _add_routes(app, service, request_schema(settings, pattern), net, tokenizer, checkpoint)
    add_openai_routes(app, service, completion_schema(settings, service.name, pattern))
    add_contract(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal as a JSON error: a body the schema refuses (422; 400 under the OpenAI
    paths), an unknown path (404), a wrong method (405, with Allow)."""

    @app.exception_handler(RequestValidationError)
    async def refused(http: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        path = http.url.path
        status = 400 if path.startswith(OPENAI_PATHS) else 422
        known = None if path.startswith(OPENAI_PATHS) else GENERATE_FIELDS
        errors = exc.errors()
        body = error_body(path, status, _validation_message(errors, known))
        where = errors[0].get("loc", ()) if errors else ()
        if path.startswith(OPENAI_PATHS) and len(where) > 1:    # OpenAI's "param": the field
            body["error"]["param"] = str(where[1])[:60]
        return JSONResponse(body, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(http: HTTPRequest, exc: HTTPException) -> JSONResponse:
        message = {404: f"no such path: {http.url.path[:100]}",
                   405: f"{http.method} is not allowed here"}.get(exc.status_code,
                                                                    str(exc.detail))
        return error(exc.status_code, message, http.url.path, **(exc.headers or {}))


def _add_routes(app: FastAPI, service: Service, Body, net, tokenizer, checkpoint: dict) -> None:
    """/v1/generate, /v1/info, /health, the playground page and /docs."""
    engine, settings = service.engine, service.settings

    @app.post("/v1/generate", response_model=None, summary="Generate text",
              responses=service.errors(401, 413, 422, 503, ok={
                  "application/json": {"schema": {"$ref": "#/components/schemas/"
                                                          "GenerateAnswer"}},
                  "text/event-stream": event_stream(("message", "end", "error"), True)}))
    async def generate(body: Body, http: HTTPRequest) -> Response:  # type: ignore[valid-type]
        return await _generate(service, body.model_dump(), http)

    @app.get("/v1/info", summary="The model, its vocabulary and metrics; the defaults",
             responses=service.errors(401))
    async def info() -> dict:
        return _info(net, tokenizer, checkpoint, settings, service.name)

    @app.get("/health", summary="Whether the server takes requests", response_model=Health,
             responses=error_responses((503,), False, None, Health))
    async def health() -> Response:
        running, waiting = engine.load()
        status = "shutting down" if engine.closed else "ok"
        return JSONResponse({"status": status, "running": running, "waiting": waiting},
                            status_code=503 if engine.closed else 200)

    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse,
                   include_in_schema=False)
    async def playground() -> HTMLResponse:
        page = resources.files("charrnn.serve").joinpath("playground.html").read_text("utf-8")
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()),
                            headers={"Content-Security-Policy": PAGE_POLICY})


async def _generate(service: Service, fields: dict, http: HTTPRequest) -> Response:
    """POST /v1/generate once the body has its fields and types: 422 for a value out of range
    or a prime the model cannot read, 503 (and Retry-After) when the queue is full."""
    prime, streaming = fields.pop("prime"), fields.pop("stream")
    stop = fields.pop("stop")
    try:
        config = SampleConfig(**fields, stop=stop, precision=service.settings.precision)
        stream, request = service.submit(prime, config.validate(), [stop] if stop else [],
                                         http, streaming)
    except Busy as busy:
        return error(503, str(busy), **{"Retry-After": "1"})
    except CharRNNError as bad:
        return error(422, str(bad))
    if streaming:
        return StreamingResponse(_events(stream, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    gone = await _whole(stream, request, http)
    if gone is not None:
        return gone
    if request.error is not None:
        return error(500, str(request.error))
    return JSONResponse(_answer(request))


async def _whole(stream: EventStream, request: Request, http: HTTPRequest) -> Optional[Response]:
    """Wait for the request's end; a client that goes away meanwhile cancels it (499)."""
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
    return None


GENERATE_FIELDS = ["prime", *(item.name for item in declared(SampleConfig)
                             if item.name not in NOT_PER_REQUEST), "stream"]


def _shown(value: Any) -> str:
    """A value a client sent, as an error shows it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validation_message(errors: list, known: Optional[list] = None) -> str:
    """One line from pydantic's errors: the first field and what is wrong with it (the
    fields that exist, ``known``, for an unknown one); bounded whatever the body."""
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())[1:])[:60] or "the body"
    if first.get("type") == "extra_forbidden":
        listed = f": the fields are {', '.join(known)}" if known else ""
        return f"unknown field {where!r}{listed}"
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON: {(first.get('ctx') or {}).get('error', '')}"
    if first.get("type") in ("model_attributes_type", "dict_type") and len(first["loc"]) <= 1:
        if isinstance(first.get("input"), bytes):      # FastAPI read it as not JSON
            return ("the body must be a JSON object sent with the header 'Content-Type: "
                    "application/json'")
        return f"the body must be a JSON object, got {_shown(first.get('input'))}"
    return f"{where}: {first.get('msg')}, got {_shown(first.get('input'))}"


def _info(net, tokenizer, checkpoint: dict, settings: ServeConfig, name: str) -> dict:
    config = checkpoint.get("config") or {}
    defaults = {item.name: item.default for item in declared(SampleConfig)
                if item.name not in NOT_PER_REQUEST}
    defaults["length"] = min(defaults["length"], settings.max_length)
    return {"charrnn_version": __version__, "name": name,
            "model": {**dataclasses.asdict(net.config), "parameters": net.num_params()},
            "vocabulary": "".join(tokenizer.chars), "metrics": config.get("metrics", {}),
            "sampling": {"defaults": defaults, "precision": settings.precision},
            "limits": {name: getattr(settings, name) for name in
                       ("max_batch", "max_queue", "max_length", "max_prime", "max_stop",
                        "max_body")}}
