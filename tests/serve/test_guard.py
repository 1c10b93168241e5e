"""What the server refuses before a request reaches the model, through FastAPI's test client
(ASGI): numbers JSON does not have, the API key, hosts and origins on a non-loopback address
(in the settings only: nothing binds 0.0.0.0 here), errors of bounded size, unknown paths and
methods, HEAD, the limits on prime and stop; and the start-up checks as functions."""
import json
import os

import pytest
from fastapi.testclient import TestClient

import charrnn
from charrnn.config import ServeConfig
from charrnn.errors import CharRNNError, OptionError
from charrnn.serve.app import create_app
from charrnn.serve.guard import api_keys
from charrnn.serve.server import browsable_url, start_notes

BASE = "http://127.0.0.1:8000"
KEY = "s3cret-key-for-tests"


def _client(trained, base=BASE, **settings):
    model = charrnn.load(trained, device="cpu")
    checkpoint = {"folder": str(trained / "best"), "config": model.saved_config}
    app = create_app(model.net, model.tokenizer, checkpoint,
                     ServeConfig(**{"max_length": 200, "max_batch": 8, **settings}))
    return TestClient(app, base_url=base)


@pytest.fixture(scope="module")
def plain(trained):
    with _client(trained, max_prime=50, max_stop=5) as client:
        yield client


@pytest.mark.parametrize("body", [
    b'{"length": NaN}', b'{"length": Infinity}', b'{"temperature": -Infinity}',
    b'{"temperature": 1e1000}', b'{"seed": 1e400}', b"NaN", b"[1, NaN]",
    b'{"length": ' + b"9" * 5000 + b"}"])
def test_numbers_json_does_not_have_get_a_4xx_with_an_error(plain, body):
    for path, status in (("/v1/generate", 422), ("/v1/completions", 400)):
        response = plain.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, response.text
        answer = response.json()
        message = answer["error"] if path == "/v1/generate" else answer["error"]["message"]
        assert message.startswith("the body is not valid JSON")


def test_errors_are_bounded_and_unknown_paths_and_methods_answer_json(plain):
    many = json.dumps({f"key{i}": "x" * 3 for i in range(6000)}).encode()[:59_000] + b"}"
    for body in (many, json.dumps({f"k{i}": 1 for i in range(4000)}).encode(),
                 json.dumps({"prime": "Z" * 40_000}).encode()):
        response = plain.post("/v1/generate", content=body,
                              headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500 and len(response.content) < 1000
    missing = plain.get("/nowhere")
    assert missing.status_code == 404 and "no such path" in missing.json()["error"]
    wrong = plain.put("/v1/generate", json={})
    assert wrong.status_code == 405 and wrong.json()["error"] and "POST" in wrong.headers["allow"]


def test_head_answers_200_where_health_checkers_ask(plain):
    for path in ("/health", "/"):
        response = plain.head(path)
        assert response.status_code == 200 and response.content == b""


def test_prime_and_stop_have_limits_with_a_clear_message(plain):
    long = plain.post("/v1/generate", json={"prime": "the " * 13, "length": 5})
    assert long.status_code == 422
    assert long.json()["error"] == ("the prime is 52 characters long; this server reads at "
                                    "most 50 (its --max-prime)")
    stop = plain.post("/v1/generate", json={"stop": "kingdom", "length": 5})
    assert stop.status_code == 422 and "(its --max-stop)" in stop.json()["error"]


def test_info_names_the_model_not_the_servers_folders(plain, trained):
    info = plain.get("/v1/info").json()
    assert info["name"] == trained.name
    assert str(trained) not in json.dumps(info) and "/" not in info["name"]


def _message(answer) -> str:
    error = answer.json()["error"]          # OpenAI routes: {"error": {"message": ...}}
    return error if isinstance(error, str) else error["message"]


def test_the_api_key_guards_every_api_path_and_nothing_else(trained):
    with _client(trained, api_key=KEY) as client:
        for path in ("/v1/info", "/v1/models"):
            refused = client.get(path)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert "needs an API key" in _message(refused)
            wrong = client.get(path, headers={"Authorization": "Bearer " + KEY[:-1] + "X"})
            assert wrong.status_code == 401
            assert "the API key sent is not one this server accepts" in _message(wrong)
            assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        refused = client.post("/v1/generate", json={"length": 3})
        assert "Authorization: Bearer KEY" in refused.json()["error"]
        assert client.post("/v1/completions", json={}).json()["error"]["code"] == \
            "invalid_api_key"
        for path in ("/health", "/", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 200, path
        schema = client.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_keys_come_from_the_flag_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CHARRNN_API_KEY", raising=False)
    assert api_keys(ServeConfig()) == []
    keys = tmp_path / "keys"
    keys.write_text("# the team\nalpha-key\n\nbeta-key\n", encoding="utf-8")
    monkeypatch.setenv("CHARRNN_API_KEY", "gamma-key")
    assert api_keys(ServeConfig(api_key="one", api_key_file=str(keys))) == \
        ["one", "alpha-key", "beta-key", "gamma-key"]
    keys.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(CharRNNError, match="holds no key"):
        api_keys(ServeConfig(api_key_file=str(keys)))
    with pytest.raises(CharRNNError, match="cannot read --api-key-file"):
        api_keys(ServeConfig(api_key_file=str(tmp_path / "absent")))


def test_on_every_address_foreign_hosts_and_origins_are_refused_as_configured(trained):
    foreign = {"Host": "evil.example", "Origin": "http://evil.example"}
    with _client(trained, host="0.0.0.0", api_key=KEY) as client:
        answer = client.post("/v1/generate", json={"length": 3}, headers=foreign)
        assert answer.status_code == 401          # the key, whatever Host and Origin say
        keyed = {**foreign, "Authorization": f"Bearer {KEY}"}
        # Host and Origin agree: not cross-origin; only the key or --allowed-hosts stop it
        assert client.post("/v1/generate", json={"length": 3}, headers=keyed).status_code == 200
    with _client(trained, host="0.0.0.0", allowed_hosts="api.example.com, 10.0.0.5") as client:
        answer = client.get("/health", headers=foreign)
        assert answer.status_code == 400 and "--allowed-hosts" in answer.json()["error"]
        assert client.get("/health", headers={"Host": "api.example.com:8000"}).status_code == 200
        assert client.get("/health", headers={"Host": "10.0.0.5"}).status_code == 200
        other = client.get("/health", headers={"Host": "api.example.com",
                                               "Origin": "http://evil.example"})
        assert other.status_code == 403


def test_start_warns_without_a_key_on_other_addresses_and_prints_a_browsable_address():
    assert start_notes(ServeConfig(), []) == []
    notes = start_notes(ServeConfig(host="0.0.0.0"), [], 8000)
    assert len(notes) == 2 and "no API key" in notes[1] and "--api-key" in notes[1]
    assert len(start_notes(ServeConfig(host="0.0.0.0"), ["k"], 8000)) == 1
    assert browsable_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/"
    assert browsable_url("::", 81) == "http://[::1]:81/"
    assert browsable_url("192.168.1.5", 80) == "http://192.168.1.5:80/"


@pytest.mark.parametrize("origin, message", [
    ("http://localhost:3000/", "use http://localhost:3000"),
    ("localhost:3000", "must be an origin"),
    ("http://a.example/page", "use http://a.example")])
def test_a_cors_origin_that_is_not_an_origin_is_refused_at_start(origin, message):
    with pytest.raises(OptionError, match=message):
        ServeConfig(cors_origin=origin).validate()
    assert ServeConfig(cors_origin="*").validate().cors_origin == "*"
    assert ServeConfig(cors_origin="https://a.example:8443").validate()


def test_a_star_cors_origin_lets_any_page_call(trained):
    with _client(trained, cors_origin="*") as client:
        answer = client.get("/health", headers={"Origin": "http://anywhere.example"})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
