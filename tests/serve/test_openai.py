"""The OpenAI-compatible API with the `openai` package itself as the client, against a real
server on 127.0.0.1: /v1/models, /v1/completions (n and seed as `charrnn sample`, temperature
0 as greedy, stops excluded, echo, usage in characters, streaming), the errors in OpenAI's
shape, and the API key as the client sends it."""
import openai
import pytest
from live import serve_live  # noqa: F401 (a fixture)

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def served(serve_live, trained):
    with serve_live(api_key=KEY, max_batch=8) as (model, url):
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        yield model, client, url, trained.name


def test_models_lists_the_one_model(served):
    _, client, _, name = served
    assert [m.id for m in client.models.list().data] == [name]
    assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_n_and_seed_give_the_texts_of_charrnn_sample(served):
    model, client, _, name = served
    answer = client.completions.create(model=name, prompt="the ", max_tokens=40, n=3, seed=7,
                                       temperature=0.8)
    expected = model.generate("the ", length=40, num_samples=3, seed=7, temperature=0.8)
    assert [c.text for c in answer.choices] == [t[4:] for t in expected]
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert {c.finish_reason for c in answer.choices} == {"length"}
    assert answer.usage.prompt_tokens == 4 and answer.usage.completion_tokens == 120
    assert answer.model == name and answer.object == "text_completion"
    default = client.completions.create(model=name, prompt="the ", seed=1)
    assert len(default.choices[0].text) == 16                        # OpenAI's max_tokens
    echoed = client.completions.create(model=name, prompt="the ", max_tokens=5, seed=2,
                                       echo=True)
    assert echoed.choices[0].text == model.generate("the ", length=5, seed=2)


def test_temperature_zero_is_greedy_and_stops_are_left_out(served):
    model, client, _, name = served
    greedy = client.completions.create(model=name, prompt="the ", max_tokens=60,
                                       temperature=0)
    expected = model.generate("the ", length=60, greedy=True)[4:]
    assert greedy.choices[0].text == expected
    stops = sorted({expected[10:12], expected[30:33]})
    stopped = client.completions.create(model=name, prompt="the ", max_tokens=60,
                                        temperature=0, stop=stops)
    ends = [expected.find(s) for s in stops]
    assert stopped.choices[0].text == expected[:min(e for e in ends if e >= 0)]
    assert stopped.choices[0].finish_reason == "stop"
    single = client.completions.create(model=name, prompt="the ", max_tokens=60,
                                       temperature=0, stop=expected[20:23])
    assert single.choices[0].text == expected[:expected.find(expected[20:23])]


def test_a_stream_gives_the_same_text_and_holds_back_a_stop(served):
    model, client, _, name = served
    expected = model.generate("the ", length=80, seed=3, num_samples=2)
    stop = expected[0][40:43]
    plain = client.completions.create(model=name, prompt="the ", max_tokens=80, seed=3, n=2,
                                      stop=stop)
    texts, reasons, usage = {0: "", 1: ""}, {}, None
    for chunk in client.completions.create(model=name, prompt="the ", max_tokens=80, seed=3,
                                           n=2, stop=stop, stream=True,
                                           stream_options={"include_usage": True}):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    assert [texts[0], texts[1]] == [c.text for c in plain.choices]
    assert stop not in texts[0] and reasons[0] == "stop"
    assert usage.prompt_tokens == 4


def test_errors_come_in_openais_shape(served):
    _, client, _, name = served
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="the ")
    with pytest.raises(openai.NotFoundError, match="/v1/completions"):
        client.chat.completions.create(model=name, messages=[{"role": "user",
                                                              "content": "hi"}])
    for bad in ({"max_tokens": 10_000}, {"temperature": 3}, {"stop": ["a", "b", "c", "d", "e"]},
                {"prompt": "Zebra"}, {"n": 99}, {"presence_penalty": 1.0}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(**{"model": name, "prompt": "the ", **bad})
        field = next(iter(bad))          # OpenAI's "param" names a field the schema refused
        assert caught.value.param == (None if field == "prompt" else field), caught.value.body
    keyless = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        keyless.models.list()
