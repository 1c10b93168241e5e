"""The OpenAPI document of ``charrnn serve`` as the contract: every range as minimum/maximum
(from the declarations in charrnn/config.py and the server's own limits), the prime's
characters as a pattern (the model's vocabulary), every status code the server answers with
its JSON error shape, both content types of a streamable answer, and the bearer key when the
server has one. tests/serve/test_contract.py holds the server to it with schemathesis.

``/docs`` is this document as one static HTML page, rendered here: nothing comes from the
network (FastAPI's own /docs and /redoc pages load Swagger UI and fonts from CDNs; they are
off). The playground (/) and /openapi.json are linked from it.
"""
from __future__ import annotations

import html
from typing import Optional

from typing import Annotated

from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, BeforeValidator, Field

OPENAI_ERROR_PATHS = ("/v1/completions", "/v1/models")
DESCRIPTIONS = {400: "A bad request (a Host not allowed; on OpenAI paths, any bad field)",
                401: "No API key, or a wrong one", 403: "A page of another origin, or a "
                "Host that is not this machine", 404: "No such model", 408: "The headers or "
                "body came too slowly", 413: "The body is too large", 422: "A field is "
                "wrong: its type, its range, or characters the model never saw",
                503: "Busy (the queue, the client's share, the connections) or shutting down"}


def _whole_float(value):
    """2.0 -> 2: JSON schema's integers include numbers with a zero fraction."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


# The largest seed over HTTP: 2**53 - 1, the largest integer JSON numbers hold exactly in
# JavaScript and in JSON schema validators that compare as doubles (charrnn's own: 2**63 - 1).
HTTP_SEED_MAX = 2**53 - 1

# An integer field of a request: strict (no "2", no true) but, as JSON schema says, 2.0 is 2.
Whole = Annotated[int, BeforeValidator(_whole_float)]


def whole(low: int, high: int):
    """Whole, within [low, high] (stated in the JSON schema as minimum and maximum)."""
    return Optional[Annotated[int, Field(ge=low, le=high), BeforeValidator(_whole_float)]]


def event_stream(events: tuple, json_data: bool) -> dict:
    """The OpenAPI content of a text/event-stream answer: each event (as schemathesis and
    OpenAPI 3.2 read a stream) has ``data`` and maybe an ``event`` name of ``events``;
    ``json_data``: its data is always a JSON object."""
    data: dict = {"type": "string"}
    if json_data:
        data.update(contentMediaType="application/json", contentSchema={"type": "object"})
    properties = {"data": data, "event": {"type": "string", "enum": list(events)},
                  "id": {"type": "string"}, "retry": {"type": "integer"}}
    return {"schema": {"type": "object", "required": ["data"], "properties": properties}}


class Error(BaseModel):
    """Every error of charrnn's own API: what is wrong, in one line."""
    error: str


class OpenAIErrorDetail(BaseModel):
    """OpenAI's error object."""
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class OpenAIError(BaseModel):
    """An error of the OpenAI-compatible paths, in OpenAI's shape."""
    error: OpenAIErrorDetail


class GenerateAnswer(BaseModel):
    """The answer of POST /v1/generate (and the data of its stream's ``end`` event)."""
    texts: list[str]
    stopped: list[str]
    seed: int


class Health(BaseModel):
    """GET /health: whether the server takes requests, rows running, requests waiting."""
    status: str
    running: int
    waiting: int


def vocabulary_pattern(tokenizer) -> Optional[str]:
    """A JSON-schema pattern that matches the texts the model can read (its characters), or
    None when it has none."""
    chars = [c for c in tokenizer.chars if len(c) == 1]
    if not chars:
        return None
    escaped = "".join("\\" + c if c in "\\]^-[" else c if c.isprintable() and ord(c) > 31
                      else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else c for c in chars)
    return f"^[{escaped}]*$"


def error_responses(codes, has_keys: bool, ok: Optional[dict] = None,
                    ok_model: Optional[type] = None, openai: bool = False) -> dict:
    """FastAPI ``responses`` for a route: ``codes`` and those of the guard (400, 403, 408,
    503; 401 with keys), each with its error model; ``ok``: the content types of 200."""
    model = OpenAIError if openai else Error
    wanted = set(codes) | {400, 403, 408, 503} | ({401} if has_keys else set())
    if not has_keys:
        wanted.discard(401)
    responses: dict = {code: {"model": model, "description": DESCRIPTIONS[code]}
                       for code in sorted(wanted)}
    if ok is not None:
        responses[200] = {"content": ok, "description": "The answer"}
    if ok_model is not None and 503 in responses and not openai:
        responses[503] = {"model": ok_model, "description": DESCRIPTIONS[503]}
    return responses


def add_contract(app, service) -> None:
    """Make ``app.openapi()`` the contract (see the module docstring)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            _tidy(schema, service.has_keys)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _tidy(schema: dict, has_keys: bool) -> None:
    """FastAPI's document, corrected: its {"detail"} 422 replaced by what the server sends,
    the answer models added, the bearer scheme on /v1/* when the server has keys."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["GenerateAnswer"] = GenerateAnswer.model_json_schema()
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.get("responses", {})
            if "422" in answers and "HTTPValidationError" in str(answers["422"]):
                del answers["422"]
            if has_keys and path.startswith("/v1/"):
                operation["security"] = [{"bearer": []}]
    if has_keys:
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http",
                                                              "scheme": "bearer"}}


def docs_page(schema: dict) -> str:
    """The OpenAPI document as one self-contained HTML page (no scripts, no network)."""
    parts = [f"<h1>{html.escape(schema['info']['title'])} {schema['info']['version']}</h1>",
             f"<p>{html.escape(schema['info'].get('description', ''))}</p>",
             '<p>The contract: <a href="/openapi.json">/openapi.json</a> · the playground: '
             '<a href="/">/</a></p>']
    components = schema.get("components", {}).get("schemas", {})
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            parts.append(f"<h2>{method.upper()} {html.escape(path)}</h2>"
                         f"<p>{html.escape(operation.get('summary', ''))}</p>")
            body = operation.get("requestBody", {}).get("content", {}).get(
                "application/json", {}).get("schema", {})
            fields = components.get(body.get("$ref", "").rsplit("/", 1)[-1], {})
            rows = "".join(_field_row(name, spec) for name, spec in
                           fields.get("properties", {}).items())
            if rows:
                parts.append("<table><tr><th>field</th><th>schema</th><th>what</th></tr>"
                             f"{rows}</table>")
            codes = ", ".join(sorted(operation.get("responses", {})))
            parts.append(f"<p>Answers: {codes}</p>")
    return ("<!doctype html><html><head><meta charset=utf-8><title>charrnn API</title><style>"
            "body{font:15px/1.4 sans-serif;max-width:60em;margin:2em auto}td,th{text-align:"
            "left;vertical-align:top;padding:2px 8px}code{font-size:13px}</style></head><body>"
            + "".join(parts) + "</body></html>")


def _field_row(name: str, spec: dict) -> str:
    limits = {k: v for k, v in spec.items() if k not in ("description", "title")}
    shown = html.escape(str(limits))
    return (f"<tr><td><code>{html.escape(name)}</code></td><td><code>{shown[:300]}</code></td>"
            f"<td>{html.escape(spec.get('description', ''))}</td></tr>")
