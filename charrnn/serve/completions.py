"""The OpenAI-compatible API, as llama.cpp's server, vLLM and Ollama offer it, so that the
``openai`` client (and tools built on it) can use a charrnn model:

    POST /v1/completions         prompt, max_tokens, temperature, top_p, n, seed, stop, echo,
                                 stream (+ stream_options.include_usage); top_k as vLLM has it
    GET  /v1/models, /v1/models/{model}   the one model served
    POST /v1/chat/completions    an OpenAI-style error: a character model has no chat format

The mapping: ``temperature: 0`` (or ``top_p: 0``) is greedy; ``top_p: 1`` is no cut;
``max_tokens`` (default 16, OpenAI's) counts characters; ``stop`` is a string or up to 4, and
the text excludes it (in a stream too: characters that may begin a stop are held back until
they do not); ``echo`` puts the prompt before the text; ``n`` with ``seed`` gives the texts of
``charrnn sample --num-samples n --seed s``; ``usage`` counts characters; ``finish_reason``
is "stop" or "length" (also for a text cut short by the server's shutdown). Errors take
OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, 400 for a bad request.
"""

import asyncio
import json
import secrets
import time
from typing import Annotated, Optional, Union

from fastapi import FastAPI, Path, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from charrnn.config import SampleConfig, ServeConfig
from charrnn.errors import CharRNNError
from charrnn.sampling.engine import Busy
from charrnn.serve.contract import HTTP_SEED_MAX, event_stream, whole
from charrnn.serve.guard import error_body
from charrnn.serve.scheduler import StopMatcher, client_slots

OPENAI_MAX_TOKENS = 16          # OpenAI's default for /v1/completions
MAX_STOPS = 4


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with the usage."""
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


def completion_schema(settings: ServeConfig, name: str, prime_pattern: Optional[str]):
    """The body of POST /v1/completions as a pydantic model: OpenAI's fields and ranges,
    this server's limits (the model's name, --max-length, --max-prime, --max-stop). The
    model's name, the prompt's length and its characters are stated in the schema and checked
    by ``_complete``, which says what is wrong in words."""
    Stop = Annotated[str, Field(min_length=1, max_length=settings.max_stop)]
    prompt_limits = {"maxLength": settings.max_prime,
                     **({"pattern": prime_pattern} if prime_pattern else {})}
    Prompt = Annotated[str, Field(json_schema_extra=prompt_limits)]

    class CompletionRequest(BaseModel):
        """OpenAI's completion request (see the module docstring)."""
        model_config = ConfigDict(extra="forbid", strict=True)
        model: str = Field(description="The model's name, from /v1/models.",
                           json_schema_extra={"enum": [name]})
        prompt: Union[Prompt, Annotated[list[Prompt], Field(min_length=1, max_length=1)]] = \
            Field("", description="Text to start from (a list of one text also works).")
        max_tokens: whole(0, settings.max_length) = Field(
            None, description="Characters to generate (default 16).")
        temperature: Optional[float] = Field(None, ge=0, le=2, description="0: greedy.")
        top_p: Optional[float] = Field(None, ge=0, le=1, description="0: greedy; 1: no cut.")
        top_k: whole(1, 1 << 20) = None
        n: whole(1, client_slots(settings)) = None
        seed: whole(0, HTTP_SEED_MAX) = None
        stop: Union[None, Stop, Annotated[list[Stop], Field(min_length=1,
                                                            max_length=MAX_STOPS)]] = \
            Field(None, description=f"Up to {MAX_STOPS} texts; the text ends before the "
                                    "first one generated, which it does not include.")
        echo: Optional[bool] = False
        stream: Optional[bool] = False
        stream_options: Optional[StreamOptions] = None
        user: Optional[str] = Field(None, max_length=256)
        best_of: whole(1, 1) = Field(None, description="Only 1.")
        presence_penalty: Optional[float] = Field(None, ge=0, le=0, description="Only 0.")
        frequency_penalty: Optional[float] = Field(None, ge=0, le=0, description="Only 0.")
        logprobs: whole(0, 0) = Field(None, description="Only 0: none.")
        suffix: Optional[str] = Field(None, max_length=0, description="Only empty.")

    return CompletionRequest


def openai_error(status: int, message: str, param: Optional[str] = None,
                 code: Optional[str] = None, **headers: str) -> JSONResponse:
    """An error answer in OpenAI's shape (charrnn/serve/guard.py's error_body)."""
    body = error_body("/v1/completions", status, message)
    body["error"]["param"], body["error"]["code"] = param, code or body["error"]["code"]
    return JSONResponse(body, status_code=status, headers=headers)


def visible(text: str, stops) -> str:
    """``text`` up to (not including) the first of ``stops`` that ends in it."""
    matcher = StopMatcher(stops)
    for at, char in enumerate(text):
        found = matcher.feed(char)
        if found:
            return text[:at + 1 - found]
    return text


def sample_config(body: dict, settings: ServeConfig) -> SampleConfig:
    """The SampleConfig of a completion request (see the module docstring). Raises
    CharRNNError for a request this server cannot do."""
    temperature, top_p = body.get("temperature"), body.get("top_p")
    greedy = temperature == 0 or top_p == 0
    length = OPENAI_MAX_TOKENS if body.get("max_tokens") is None else body["max_tokens"]
    if length > settings.max_length:
        raise CharRNNError(f"max_tokens must be <= {settings.max_length} on this server, "
                           f"got {length}")
    return SampleConfig(length=length, temperature=temperature or 1.0, greedy=greedy,
                        top_p=None if top_p in (None, 0, 1) else top_p, top_k=body.get("top_k"),
                        seed=body.get("seed"), num_samples=body.get("n") or 1,
                        precision=settings.precision)


def add_openai_routes(app: FastAPI, service, Body) -> None:
    """Add the routes of the module docstring to ``app``; ``service`` (charrnn/serve/app.py's
    Service) submits requests; ``Body`` is completion_schema's model."""
    created = int(time.time())
    card = {"id": service.name, "object": "model", "created": created, "owned_by": "charrnn"}

    @app.get("/v1/models", summary="The model served (OpenAI-compatible)",
             responses=service.errors(401, openai=True))
    async def models() -> dict:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model}", summary="One model (OpenAI-compatible)",
             responses=service.errors(401, 404, openai=True))
    async def model(model: str = Path(json_schema_extra={"enum": [service.name]})
                    ) -> Response:
        if model != service.name:
            return openai_error(404, f"The model {model!r} does not exist: this server serves "
                                     f"{service.name!r}", "model", "model_not_found")
        return JSONResponse(card)

    @app.post("/v1/chat/completions", include_in_schema=False)
    async def chat() -> Response:
        return openai_error(404, "charrnn serves a character-level model, which has no chat "
                                 "format: use POST /v1/completions with a prompt instead",
                            None, "unsupported_endpoint")

    @app.post("/v1/completions", summary="Complete a prompt (OpenAI-compatible)",
              response_model=None, responses=service.errors(
                  400, 401, 404, 413, 503, openai=True, ok={
                      "application/json": {"schema": {"type": "object"}},
                      "text/event-stream": event_stream(("message",), False)}))
    async def completions(body: Body, http: HTTPRequest) -> Response:  # type: ignore[valid-type]
        return await _complete(service, body.model_dump(), http)


async def _complete(service, body: dict, http: HTTPRequest) -> Response:
    """POST /v1/completions once the body has its fields, types and ranges."""
    if body["model"] != service.name:
        return openai_error(404, f"The model {body['model']!r} does not exist: this server "
                                 f"serves {service.name!r} (see /v1/models)", "model",
                            "model_not_found")
    prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
    stops = [body["stop"]] if isinstance(body["stop"], str) else list(body["stop"] or [])
    try:
        config = sample_config(body, service.settings)
        stream, request = service.submit(prompt, config, stops, http, body["stream"])
    except Busy as busy:
        return openai_error(503, str(busy), **{"Retry-After": "1"})
    except CharRNNError as bad:
        return openai_error(400, str(bad))
    names = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion",
             "created": int(time.time()), "model": service.name}
    echo = prompt if body["echo"] else ""
    if body["stream"]:
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_chunks(stream, request, names, echo, usage),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    gone = await service.wait(stream, request, http)
    if gone is not None:
        return gone
    if request.error is not None:
        return openai_error(500, str(request.error))
    choices = [{"text": echo + visible("".join(chars), request.stops), "index": i,
                "logprobs": None, "finish_reason": _reason(request.stopped[i])}
               for i, chars in enumerate(request.texts)]
    return JSONResponse({**names, "choices": choices, "usage": _usage(request),
                         "system_fingerprint": None})


def _reason(stopped: Optional[str]) -> str:
    return "stop" if stopped == "stop" else "length"


def _usage(request) -> dict:
    made = sum(len(chars) for chars in request.texts)
    return {"prompt_tokens": len(request.prime), "completion_tokens": made,
            "total_tokens": len(request.prime) + made}


def _chunk(names: dict, index: int, text: str, reason: Optional[str] = None) -> str:
    choice = {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
    return f"data: {json.dumps({**names, 'choices': [choice]})}\n\n"


async def _chunks(stream, request, names: dict, echo: str, usage: bool):
    """The streamed completion: a chunk per sample as text comes (what may begin a stop held
    back), a last chunk per sample with its finish_reason, the usage, then [DONE]. A client
    that goes away cancels the request (``finally``)."""
    samples = range(request.config.num_samples)
    matchers = {i: StopMatcher(request.stops) for i in samples}
    held, done = {i: "" for i in samples}, set()
    try:
        for i in samples:
            if echo:
                yield _chunk(names, i, echo)
        ended = False
        while not ended:
            texts, ended = await stream.take()
            for i, text in texts.items():
                out = _hold(matchers[i], held, done, i, text)
                if out:
                    yield _chunk(names, i, out)
            if not ended:
                await asyncio.sleep(0.05)
        if request.error is not None:
            yield f"data: {json.dumps(error_body('/v1/completions', 500, str(request.error)))}\n\n"
        else:
            for i in samples:
                yield _chunk(names, i, held[i], _reason(request.stopped[i]))
            if usage:
                yield f"data: {json.dumps({**names, 'choices': [], 'usage': _usage(request)})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        request.cancel()


def _hold(matcher: StopMatcher, held: dict, done: set, i: int, text: str) -> str:
    """Feed ``text`` of sample ``i``: what can be sent now; ``held[i]`` keeps what may begin a
    stop (and, once a stop has come, the sample is ``done``: nothing more is sent)."""
    if i in done:
        return ""
    pending = held[i]
    for char in text:
        pending += char
        found = matcher.feed(char)
        if found:
            done.add(i)
            held[i] = ""
            return pending[:len(pending) - found]
    keep = matcher.partial
    held[i] = pending[len(pending) - keep:] if keep else ""
    return pending[:len(pending) - keep]
