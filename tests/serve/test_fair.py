"""The server's engine is fair to every client (charrnn/serve/scheduler.py): no client takes
every slot or queue place, a long prime does not hold the requests behind it, and stop texts
are matched in time linear in the text. The engine is stepped in the test's own thread."""
import http.client
import json
import random
import time

import pytest

import charrnn
from charrnn.config import SampleConfig, ServeConfig
from charrnn.sampling.engine import Busy
from charrnn.serve.scheduler import FairEngine, ServeRequest, StopMatcher, client_queue, \
    client_slots
from live import serve_live  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def model(trained):
    return charrnn.load(trained, device="cpu")


def _engine(model, **settings):
    return FairEngine(model.net, model.tokenizer, ServeConfig(**settings))


def _ask(engine, client, length=10, prime="the ", stops=(), n=1, seed=1):
    return engine.submit(ServeRequest(prime, SampleConfig(length=length, seed=seed,
                                                          num_samples=n), client, stops))


def test_one_client_cannot_take_every_slot_or_queue_place(model):
    engine = _engine(model, max_batch=8, max_queue=8)      # 4 slots, 2 waiting per client
    greedy = [_ask(engine, "greedy", length=10_000) for _ in range(6)]
    with pytest.raises(Busy, match="of your requests are already waiting"):
        _ask(engine, "greedy", length=10_000)
    engine.step()
    assert engine.running == 4 and len(engine.waiting) == 2
    others = [_ask(engine, f"client {i}", length=5) for i in range(4)]   # no 503 for them
    for _ in range(8):
        engine.step()
    assert all(r.done.is_set() and r.stopped == ["length"] for r in others)
    assert not any(r.done.is_set() for r in greedy)
    for request in greedy:
        request.cancel()
    engine.step_until_done()


def test_free_slots_go_to_the_client_that_holds_fewest(model):
    engine = _engine(model, max_batch=4, max_queue=16, client_slots=4, client_queue=16)
    first = [_ask(engine, "a", length=3 if i == 0 else 50) for i in range(4)]
    waiting_a = [_ask(engine, "a", length=3) for _ in range(3)]
    engine.step()                                  # a runs 4
    late_b = _ask(engine, "b", length=3)           # came last; its client holds no slot
    while not first[0].done.is_set():
        engine.step()
    engine.step()                                  # the one free slot: to b, not to a
    assert late_b not in engine.waiting and all(r in engine.waiting for r in waiting_a)
    engine.step_until_done()
    assert all(r.done.is_set() for r in waiting_a + [late_b])


def test_the_shares_default_to_a_half_and_a_quarter():
    assert client_slots(ServeConfig(max_batch=64)) == 32
    assert client_queue(ServeConfig(max_queue=64)) == 16
    assert client_queue(ServeConfig(max_queue=1)) == 1
    assert client_queue(ServeConfig(max_queue=0)) == 0
    assert client_slots(ServeConfig(max_batch=8, client_slots=20)) == 8


def test_a_short_request_does_not_wait_for_long_primes_before_it(model):
    chars = "".join(c for c in model.tokenizer.chars if c.isalpha())
    engine = _engine(model, max_batch=8, max_queue=8, client_slots=8, client_queue=8)
    rng = random.Random(0)
    longs = [_ask(engine, f"long {i}", prime="".join(rng.choice(chars) for _ in range(4000)),
                  length=1) for i in range(3)]
    short = _ask(engine, "short", prime="the ", length=5)
    steps = 0
    while not short.done.is_set():
        engine.step()
        steps += 1
    assert steps <= 8                            # (first come first served: about 47 steps)
    assert not any(r.done.is_set() for r in longs)
    engine.step_until_done()
    alone = model.generate(longs[0].prime, length=1, seed=1)
    assert longs[0].result() == [alone]          # shared reading: the same text


def naive_first_stop(text, stops):
    for end in range(1, len(text) + 1):
        found = [len(s) for s in stops if text[:end].endswith(s)]
        if found:
            return end, max(found)
    return None


def test_stop_matching_finds_what_the_plain_search_finds():
    rng = random.Random(1)
    for _ in range(400):
        text = "".join(rng.choice("ab") for _ in range(rng.randint(0, 40)))
        stops = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 5)))
                 for _ in range(rng.randint(1, 4))]
        matcher, found = StopMatcher(stops), None
        for at, char in enumerate(text):
            length = matcher.feed(char)
            if length:
                found = (at + 1, length)
                break
        assert found == naive_first_stop(text, stops), (text, stops)


def test_stop_matching_takes_time_linear_in_the_text():
    def run(stop_length):
        matcher, text = StopMatcher(["a" * stop_length + "b"]), "a" * 50_000
        started = time.perf_counter()
        for char in text:
            matcher.feed(char)
        return time.perf_counter() - started
    assert run(20_000) < 5 * run(10) + 0.05      # not 2,000 times slower


def test_stops_end_each_sample_as_the_engine_would(model):
    engine = _engine(model, max_batch=8, client_slots=8)
    request = _ask(engine, "c", prime="the ", length=200, stops=["king", "queen"], n=4, seed=5)
    engine.step_until_done()
    expected = model.generate("the ", length=200, seed=5, num_samples=4)
    for text, got, why in zip(expected, request.result(), request.stopped):
        ends = [text.find(s, 4) + len(s) for s in ("king", "queen") if text.find(s, 4) >= 0]
        assert got == (text[:min(ends)] if ends else text)
        assert why == ("stop" if ends else "length")


def _post(port, body, forwarded_for):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/v1/generate", json.dumps(body),
                       {"Content-Type": "application/json", "X-Forwarded-For": forwarded_for})
    return connection, connection.getresponse()


@pytest.mark.parametrize("trusted", [True, False])
def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(serve_live, trusted):
    settings = dict(max_batch=2, client_slots=1, client_queue=0, max_length=1_000_000,
                    forwarded_allow_ips="127.0.0.1" if trusted else None)
    with serve_live(**settings) as (_, url):
        port = int(url.rsplit(":", 1)[-1])
        held, stream = _post(port, {"prime": "the ", "length": 1_000_000, "stream": True},
                             "10.0.0.1")
        assert stream.status == 200 and stream.readline()      # running: its one slot taken
        try:
            _, again = _post(port, {"length": 5}, "10.0.0.1")
            _, other = _post(port, {"length": 5}, "10.0.0.2")
            assert again.status == 503                  # the same client has no queue place
            # Trusted: another forwarded address is another client. Untrusted: the header
            # is ignored, and every request is the proxy's (127.0.0.1) own.
            assert other.status == (200 if trusted else 503)
        finally:
            held.close()
