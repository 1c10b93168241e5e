"""The HTTP API through FastAPI's test client: answers, streams, refusals (with a JSON error
that says what is wrong), the origin and body-size guards, /v1/info, /health, the page."""
import json
import re
import socket

import pytest
from fastapi.testclient import TestClient

import charrnn
from charrnn.config import ServeConfig
from charrnn.serve.guard import is_loopback
from charrnn.serve.app import create_app

BASE = "http://127.0.0.1:8000"


def _app(trained, **settings):
    model = charrnn.load(trained, device="cpu")
    checkpoint = {"folder": str(trained), "config": model.saved_config}
    return model, create_app(model.net, model.tokenizer, checkpoint,
                             ServeConfig(**{"max_length": 500, **settings}))


@pytest.fixture(scope="module")
def served(trained):
    model, app = _app(trained, max_batch=8, max_body=2048)
    with TestClient(app, base_url=BASE) as client:
        yield model, client


def events(text: str) -> list[tuple[str, dict]]:
    """Server-Sent Events -> [(event name, data)], "message" when unnamed."""
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((lines.get("event", "message"), json.loads(lines["data"])))
    return found


def test_generate_answers_what_the_python_api_gives(served):
    model, client = served
    body = {"prime": "the ", "length": 60, "temperature": 0.7, "top_p": 0.9, "seed": 4,
            "num_samples": 3, "stop": "king"}
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = model.generate("the ", length=60, temperature=0.7, top_p=0.9, seed=4,
                              num_samples=3, stop="king")
    assert answer["texts"] == expected and answer["seed"] == 4
    assert answer["stopped"] == ["stop" if t.endswith("king") else "length" for t in expected]


def test_a_stream_sends_the_text_as_it_comes_then_the_whole_answer(served):
    model, client = served
    body = {"prime": "to", "length": 80, "seed": 9, "num_samples": 2, "stream": True}
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    found = events(response.text)
    *pieces, (last, end) = found
    assert last == "end" and {name for name, _ in pieces} == {"message"}
    streamed = ["to" + "".join(d["text"] for _, d in pieces if d["sample"] == i)
                for i in range(2)]
    expected = model.generate("to", length=80, seed=9, num_samples=2)
    assert streamed == end["texts"] == expected
    without_a_seed = events(client.post("/v1/generate", json={"length": 5, "stream": True}).text)
    seed = without_a_seed[-1][1]["seed"]          # one a browser's numbers hold exactly
    assert isinstance(seed, int) and 0 <= seed < 2**53
    again = client.post("/v1/generate", json={"length": 5, "seed": seed}).json()["texts"]
    assert again == without_a_seed[-1][1]["texts"]


@pytest.mark.parametrize("body, message", [
    ({"prime": "the", "lenght": 5}, "unknown field 'lenght': the fields are prime, length"),
    ({"precision": "bf16"}, "unknown field 'precision'"),
    ({"temperature": "hot"}, "temperature: Input should be a valid number, got 'hot'"),
    ({"length": 5.5}, "length: Input should be a valid integer"),
    ({"seed": "7"}, "seed: Input should be a valid integer"),
    ({"greedy": 1}, "greedy: Input should be a valid boolean"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
    ({"temperature": 0}, "temperature must be > 0, got 0"),
    ({"num_samples": 0}, "num_samples must be"),
    ({"stop": ""}, "stop must not be empty"),
    ({"length": 501}, r"length must be <= 500 on this server \(its --max-length\), got 501"),
    ({"num_samples": 9}, "num_samples must be <= 8 here"),
    ({"prime": "Zebra"}, "the prime holds characters the model never saw: 'Z'"),
])
def test_a_bad_request_is_refused_with_a_message_that_says_what_is_wrong(served, body, message):
    _, client = served
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422
    assert re.search(message, response.json()["error"]), response.json()


@pytest.mark.parametrize("content, kind, message", [
    (b"{not json", "application/json", "the body is not valid JSON: Expecting property name"),
    (b"[1, 2]", "application/json", r"the body must be a JSON object, got \[1, 2\]"),
    (b'{"length": 3}', "text/plain", "sent with the header 'Content-Type: application/json'")])
def test_a_body_that_is_not_a_json_object_is_refused(served, content, kind, message):
    response = served[1].post("/v1/generate", content=content, headers={"content-type": kind})
    assert response.status_code == 422 and re.search(message, response.json()["error"])


def test_an_oversized_body_is_refused_as_it_arrives(served):
    _, client = served
    big = json.dumps({"prime": "the " * 600}).encode()             # 2.4 KB > 2048 bytes
    response = client.post("/v1/generate", content=big)
    assert response.status_code == 413
    assert response.json()["error"] == ("the body is larger than 2048 bytes (the server's "
                                        "--max-body)")
    chunks = (b" " * 1024 for _ in range(3))       # chunked: no Content-Length to go by
    response = client.post("/v1/generate", content=chunks)
    assert response.status_code == 413     # (tests/serve/test_server.py: before the rest is sent)


def test_cross_origin_requests_are_refused_unless_the_origin_is_named(trained, served):
    _, client = served
    same = client.post("/v1/generate", json={"length": 3}, headers={"Origin": BASE})
    assert same.status_code == 200
    other = client.post("/v1/generate", json={"length": 3},
                        headers={"Origin": "http://elsewhere.example"})
    assert other.status_code == 403
    assert "--cors-origin http://elsewhere.example" in other.json()["error"]
    rebound = client.get("/health", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 403 and "not this machine" in rebound.json()["error"]
    _, app = _app(trained, cors_origin="http://elsewhere.example")
    with TestClient(app, base_url=BASE) as allowed:
        headers = {"Origin": "http://elsewhere.example"}
        answer = allowed.post("/v1/generate", json={"length": 3}, headers=headers)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "http://elsewhere.example"
        preflight = allowed.options("/v1/generate", headers={
            **headers, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200
        third = allowed.post("/v1/generate", json={}, headers={"Origin": "http://third.example"})
        assert third.status_code == 403


def test_info_health_openapi_and_the_page(served):
    model, client = served
    info = client.get("/v1/info").json()
    assert info["model"]["cell"] == "lstm" and info["vocabulary"] == "".join(model.tokenizer.chars)
    assert info["metrics"]["val_loss"] == model.saved_config["metrics"]["val_loss"]
    assert info["sampling"]["defaults"]["temperature"] == 1.0
    assert info["limits"] == {"max_batch": 8, "max_queue": 64, "max_length": 500,
                              "max_prime": 8192, "max_stop": 256, "max_body": 2048}
    assert info["name"] == "run" and "checkpoint" not in info      # no path of the server
    assert client.get("/health").json() == {"status": "ok", "running": 0, "waiting": 0}
    schema = client.get("/openapi.json").json()
    body = schema["components"]["schemas"]["GenerateRequest"]
    assert set(body["properties"]) == {"prime", "length", "temperature", "top_k", "top_p",
                                       "greedy", "seed", "num_samples", "stop", "stream"}
    assert body["additionalProperties"] is False
    page = client.get("/")
    assert page.status_code == 200 and "charrnn playground" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert re.findall(r"https?://|//[a-z]", page.text) == []      # nothing from the network


def test_loopback_addresses_are_told_apart_from_the_others():
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.8.0.1", "::1", "[::1]",
                                              "localhost", "LOCALHOST"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "192.168.1.20",
                                                  "example.com", "localhost.example.com"))


def test_a_port_in_use_is_a_one_line_error(trained):
    from click.testing import CliRunner
    from charrnn.cli.commands import main
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", str(trained), "--port", str(port)])
    assert result.exit_code == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.output


def test_the_request_schema_states_each_fields_limits_and_only_real_ones():
    from charrnn.serve.app import request_schema
    fields = request_schema().model_json_schema()["properties"]
    assert fields["temperature"]["description"].endswith("(> 0)")
    assert fields["top_p"]["description"].endswith(")") and "None" not in json.dumps(fields)
    assert not fields["stop"]["description"].endswith(")")
