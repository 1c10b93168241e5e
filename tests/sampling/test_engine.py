"""The sampling engine (continuous batching): a request's text does not depend on the requests
stepped beside it, rows join and leave between steps, the queue is bounded, a cancelled
request frees its slots at once, and stream() gives what generate() gives."""
import threading

import pytest
import torch

from charrnn import CharRNN, CharRNNError, CharTokenizer, ModelConfig, SampleConfig
from charrnn.sampling.engine import PREFILL, PRIME_CHUNK, Busy, Engine, Request
from charrnn.sampling.sampler import generate, stream

TOKENIZER = CharTokenizer("abcdefghij \n")


def _untrained(cell="lstm"):
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=TOKENIZER.vocab_size, cell=cell, layers=2,
                               hidden_size=48, embed_size=8)).eval()


def _others(count):
    """Requests unlike each other: primes, lengths, options and seeds all differ."""
    options = [dict(temperature=0.6), dict(top_k=3), dict(top_p=0.7), dict(greedy=True),
               dict(temperature=1.7, top_p=0.9), dict(stop="a ")]
    return [Request("abc"[: i % 4] + "j" * (i % 3), SampleConfig(
        length=20 + 7 * i, seed=100 + i, **options[i % len(options)])) for i in range(count)]


TARGET = dict(length=120, seed=5, temperature=0.8, top_k=9, top_p=0.95)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_request_gives_the_same_text_alone_or_among_63_others(cell):
    model = _untrained(cell)
    alone = Engine(model, TOKENIZER, max_batch=64)
    target = alone.submit(Request("bad ", SampleConfig(**TARGET)))
    alone.step_until_done()
    crowd = Engine(model, TOKENIZER, max_batch=64)
    others = [crowd.submit(r) for r in _others(40)]
    for _ in range(5):                      # the target joins a batch already running
        crowd.step()
    again = crowd.submit(Request("bad ", SampleConfig(**TARGET)))
    for request in _others(23):             # and more join while it runs
        crowd.submit(request)
        crowd.step()
    crowd.step_until_done()
    assert target.stopped == again.stopped == ["length"]
    assert again.result() == target.result()
    assert target.result() == generate(model, TOKENIZER, "bad ", SampleConfig(**TARGET))
    assert all(r.done.is_set() for r in others)


def test_idle_rows_padding_the_batch_give_the_same_texts():
    """The fixed-width mode that GPUs use (idle rows in the batch), run on the CPU."""
    model = _untrained()
    texts = []
    for pad in (False, True):
        engine = Engine(model, TOKENIZER, max_batch=16, pad=pad)
        requests = [engine.submit(r) for r in _others(12)]
        engine.step_until_done()
        texts.append([r.result() for r in requests])
    assert texts[0] == texts[1]


def test_rows_leave_when_done_and_waiting_requests_take_their_slots():
    model = _untrained()
    engine = Engine(model, TOKENIZER, max_batch=3)
    short = engine.submit(Request("a", SampleConfig(length=2, num_samples=2, seed=1)))
    long = engine.submit(Request("a", SampleConfig(length=30, seed=2)))
    waiting = engine.submit(Request("a", SampleConfig(length=5, num_samples=2, seed=3)))
    engine.step()
    assert engine.load() == (3, 1)
    engine.step()                            # `short` ends: its two slots go to `waiting`
    assert short.done.is_set() and not waiting.done.is_set()
    engine.step()
    assert engine.load() == (3, 0)
    engine.step_until_done()
    assert [len(t) for t in waiting.texts + long.texts] == [5, 5, 30]
    assert waiting.result() == generate(model, TOKENIZER, "a",
                                        SampleConfig(length=5, num_samples=2, seed=3))


def test_a_cancelled_request_frees_its_slot_at_the_next_step():
    engine = Engine(_untrained(), TOKENIZER, max_batch=1, max_queue=1)
    first = engine.submit(Request("a", SampleConfig(length=1000, seed=1)))
    engine.step()
    second = engine.submit(Request("b", SampleConfig(length=10, seed=2)))
    with pytest.raises(Busy, match="1 requests are already waiting"):
        engine.submit(Request("c", SampleConfig(length=10)))
    engine.step()
    engine.step()
    first.cancel()
    engine.step()
    assert first.done.is_set() and first.stopped == ["cancelled"] and len(first.texts[0]) == 3
    assert engine.load() == (1, 0)           # the waiting request runs in the freed slot
    engine.step_until_done()
    assert second.stopped == ["length"]


def test_a_long_prime_does_not_stall_the_running_rows():
    """A 1100-character prime: all but its last PREFILL characters go through the fused
    network, PRIME_CHUNK a step; the rest is read in the batch; the running row gets a
    character at every step meanwhile."""
    model = _untrained()
    engine = Engine(model, TOKENIZER, max_batch=2)
    running = engine.submit(Request("a", SampleConfig(length=100, seed=1)))
    engine.step()
    prime = "abcdefghij " * 100
    late = engine.submit(Request(prime, SampleConfig(length=5, seed=2)))
    steps = 0
    while not late.texts[0]:
        engine.step()
        steps += 1
        assert len(running.texts[0]) == 1 + steps
    assert steps == -(-(len(prime) - 1 - PREFILL) // PRIME_CHUNK) + PREFILL
    engine.step_until_done()
    assert late.result() == generate(model, TOKENIZER, prime, SampleConfig(length=5, seed=2))


def test_close_ends_every_request_and_refuses_new_ones():
    engine = Engine(_untrained(), TOKENIZER, max_batch=1)
    running = engine.submit(Request("a", SampleConfig(length=10**6, seed=1)))
    waiting = engine.submit(Request("a", SampleConfig(length=10, seed=1)))
    thread = engine.start()
    while not running.texts[0]:
        threading.Event().wait(0.01)
    engine.close("stopping")
    thread.join(10)
    assert not thread.is_alive()
    assert running.stopped == waiting.stopped == ["shutdown"]
    with pytest.raises(Busy, match="not accepting requests: stopping"):
        engine.submit(Request("a", SampleConfig()))


def test_a_callback_that_raises_ends_its_request_only():
    engine = Engine(_untrained(), TOKENIZER, max_batch=2)

    def broken(sample, char):
        raise BrokenPipeError("the reader went away")

    bad = engine.submit(Request("a", SampleConfig(length=20, seed=1), on_text=broken))
    good = engine.submit(Request("a", SampleConfig(length=20, seed=2)))
    engine.step_until_done()
    with pytest.raises(BrokenPipeError, match="the reader went away"):
        bad.result()
    assert bad.stopped == ["cancelled"] and len(good.result()[0]) == 21


def test_requests_the_engine_cannot_run_are_refused():
    engine = Engine(_untrained(), TOKENIZER, max_batch=4)
    with pytest.raises(CharRNNError, match="num_samples must be <= 4 here"):
        engine.submit(Request("a", SampleConfig(num_samples=5)))
    with pytest.raises(CharRNNError, match="never saw: 'Z'"):
        engine.submit(Request("Zoo", SampleConfig()))
    with pytest.raises(CharRNNError, match="top_k must be"):
        engine.submit(Request("a", SampleConfig(top_k=0)))


def test_stream_gives_the_prime_then_the_text_generate_gives():
    model = _untrained()
    config = SampleConfig(length=60, seed=3, stop="j ")
    pieces = list(stream(model, TOKENIZER, "ab", config))
    assert pieces[0] == "ab" and all(len(p) == 1 for p in pieces[1:])
    assert "".join(pieces) == generate(model, TOKENIZER, "ab", config)[0]
    with pytest.raises(CharRNNError, match="num_samples must be 1, got 2"):
        stream(model, TOKENIZER, "ab", SampleConfig(num_samples=2))
    with pytest.raises(CharRNNError, match="never saw"):
        stream(model, TOKENIZER, "Z", config)
