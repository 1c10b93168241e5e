"""Sampling: choosing the next character (sample_next, on known logits), the seed rule, and
generate on an untrained model (none of these properties depends on training); one test goes
through a trained checkpoint and the API."""
import math

import pytest
import torch

import charrnn
from charrnn import CharRNN, CharRNNError, CharTokenizer, ModelConfig
from charrnn.config import SEED_MAX, SampleConfig
from charrnn.sampling.choice import UNIFORM_BLOCK, RowUniforms, sample_next, sample_seed
from charrnn.sampling.sampler import generate
from charrnn.data.tokenizer import UNK_ID

TOKENIZER = CharTokenizer("abcdefghij \n")   # ids 1..12; 0 is <unk>
GRID = 20_000


def _untrained(cell="lstm", tokenizer=TOKENIZER):
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=tokenizer.vocab_size, cell=cell, layers=2,
                               hidden_size=32, embed_size=8)).eval()


def _sample(model, prime="ab", on_text=None, **options):
    return generate(model, TOKENIZER, prime, SampleConfig(**options), on_text)


def _grid_counts(row, **options):
    """How often each id comes out of ``row`` (logits [vocab]) over GRID evenly spaced uniforms:
    the inverse-CDF draw makes count_j = GRID * p_j to within 1, with no randomness."""
    uniform = (torch.arange(GRID, dtype=torch.float64) + 0.5) / GRID
    ids = sample_next(row.expand(GRID, -1), SampleConfig(**options), uniform)
    return torch.bincount(ids, minlength=len(row))


def _logits(probs, unk_logit=5.0):
    """Logits [1 + len(probs)] whose characters 1.. have these probabilities; <unk>'s logit is
    large, to show that it is ignored (it counts neither in the draw nor in top-k/top-p)."""
    return torch.cat([torch.tensor([unk_logit]), torch.tensor(probs).log()])


# Choosing the next character: sample_next on known logits.

def test_greedy_takes_the_largest_logit_but_never_unk():
    logits = torch.randn(50, 13, generator=torch.Generator().manual_seed(0))
    logits[::5, UNK_ID] = 100.0
    ids = sample_next(logits, SampleConfig(greedy=True), torch.rand(50))
    assert torch.equal(ids, logits[:, 1:].argmax(-1) + 1)


def test_draws_follow_the_softmax_and_skip_impossible_characters():
    row = _logits([0.0, 0.5, 0.15, 0.05, 0.0], unk_logit=math.log(0.3))
    counts = _grid_counts(row)
    expected = torch.tensor([0.0, 0.0, 0.5, 0.15, 0.05, 0.0]) / 0.7 * GRID
    assert counts[UNK_ID] == 0 and counts[1] == 0 and counts[5] == 0
    assert (counts - expected).abs().max() <= 1


@pytest.mark.parametrize("k", [1, 3, 12])
def test_top_k_never_leaves_the_k_most_likely(k):
    logits = torch.randn(400, 13, generator=torch.Generator().manual_seed(1))
    uniform = torch.rand(400, generator=torch.Generator().manual_seed(2))
    ids = sample_next(logits, SampleConfig(top_k=k), uniform)
    allowed = logits[:, 1:].topk(k, dim=-1).indices + 1
    assert (ids.unsqueeze(-1) == allowed).any(-1).all()
    if k == 1:
        assert torch.equal(ids, sample_next(logits, SampleConfig(greedy=True), uniform))
    # Within the k, the draw follows the renormalised softmax.
    counts = _grid_counts(logits[0], top_k=k)
    expected = torch.zeros(13)
    expected[allowed[0]] = logits[0, allowed[0]].softmax(-1) * GRID
    assert (counts - expected).abs().max() <= 1


# (probabilities of ids 1.., top_p, ids kept). The rule: characters in decreasing probability
# until the kept mass reaches top_p; characters tied with the last one kept are kept too.
TOP_P_CASES = [
    ([0.6, 0.3, 0.0999, 0.0001], 0.5, {1}),
    ([0.6, 0.3, 0.0999, 0.0001], 0.85, {1, 2}),
    ([0.0999, 0.6, 0.0001, 0.3], 0.95, {1, 2, 4}),            # the order of ids does not matter
    ([0.6, 0.3, 0.0999, 0.0001], 1.0, {1, 2, 3, 4}),
    ([0.2, 0.4, 0.2, 0.2], 0.3, {2}),
    ([0.2, 0.4, 0.2, 0.2], 0.5, {1, 2, 3, 4}),                 # ties at the boundary: all kept
    ([0.3, 0.1, 0.3, 0.2, 0.1], 0.5, {1, 3}),                  # a tie inside the set
    ([0.3, 0.1, 0.3, 0.2, 0.1], 0.7, {1, 3, 4}),
    ([0.3, 0.1, 0.3, 0.2, 0.1], 0.85, {1, 2, 3, 4, 5}),
    ([0.25, 0.25, 0.25, 0.25], 0.1, {1, 2, 3, 4}),
]


@pytest.mark.parametrize("probs,top_p,kept", TOP_P_CASES)
def test_top_p_keeps_the_smallest_set_that_reaches_p(probs, top_p, kept):
    counts = _grid_counts(_logits(probs), top_p=top_p)
    assert {i for i, c in enumerate(counts.tolist()) if c} == kept
    mass = sum(probs[i - 1] for i in kept)
    expected = torch.tensor([0.0] + [p / mass if i + 1 in kept else 0.0
                                     for i, p in enumerate(probs)]) * GRID
    assert (counts - expected).abs().max() <= 1


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_reshapes_the_distribution_as_softmax_says(temperature):
    """A statistical test: n draws with fixed-seed uniforms; each count is binomial, so it lies
    within 5 standard deviations of n p (fails by chance with probability < 1e-5)."""
    logits = 2 * torch.randn(13, generator=torch.Generator().manual_seed(3))
    n = 40_000
    uniform = torch.rand(n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ids = sample_next(logits.expand(n, -1), SampleConfig(temperature=temperature), uniform)
    counts = torch.bincount(ids, minlength=13).double()

    def deviation(t):   # the largest |count - n p| in standard deviations, p = softmax(logits/t)
        p = torch.cat([torch.zeros(1), (logits[1:] / t).softmax(-1)]).double()
        return ((counts - n * p).abs() / (n * p * (1 - p)).sqrt().clamp(min=1e-3)).max()

    assert counts[UNK_ID] == 0
    assert deviation(temperature) < 5
    # The test can tell temperatures apart: the others' distributions are far off.
    assert all(deviation(other) > 20 for other in (0.5, 1.0, 2.0) if other != temperature)


def test_same_uniforms_same_ids_and_each_row_on_its_own():
    logits = torch.randn(64, 13, generator=torch.Generator().manual_seed(5))
    before = logits.clone()
    uniform = torch.rand(64, generator=torch.Generator().manual_seed(6))
    config = SampleConfig(temperature=0.7, top_k=8, top_p=0.9)
    ids = sample_next(logits, config, uniform)
    assert ids.dtype == torch.int64 and ids.shape == (64,)
    assert torch.equal(ids, sample_next(logits, config, uniform))
    assert torch.equal(logits, before)
    alone = [sample_next(logits[i:i + 1], config, uniform[i:i + 1]).item() for i in range(64)]
    assert ids.tolist() == alone


@pytest.mark.parametrize("temperature", [1e-6, 1e-40, 1e-300])
def test_a_tiny_temperature_is_greedy(temperature):
    logits = torch.randn(100, 13, generator=torch.Generator().manual_seed(7))
    logits[::7, UNK_ID] = 50.0
    uniform = torch.linspace(0, 1 - 1e-12, 100, dtype=torch.float64)
    for options in (dict(), dict(top_k=3), dict(top_p=0.5)):
        ids = sample_next(logits, SampleConfig(temperature=temperature, **options), uniform)
        assert torch.equal(ids, logits[:, 1:].argmax(-1) + 1)
    # In the limit, tied maxima share the probability equally.
    counts = _grid_counts(torch.tensor([9.0, 2.0, 3.0, 3.0, -1.0]), temperature=temperature)
    assert counts.tolist() == [0, 0, GRID // 2, GRID // 2, 0]


def test_top_k_at_or_past_the_vocabulary_keeps_every_character_and_unk_is_never_read():
    logits = torch.randn(64, 13, generator=torch.Generator().manual_seed(3))
    uniform = torch.rand(64, generator=torch.Generator().manual_seed(4))
    plain = sample_next(logits, SampleConfig(), uniform)
    for k in (12, 13, 1000):            # 12 characters besides <unk>
        assert torch.equal(sample_next(logits, SampleConfig(top_k=k), uniform), plain)
    logits[:, UNK_ID] = float("nan")    # <unk>'s own logit is not looked at
    assert torch.equal(sample_next(logits, SampleConfig(), uniform), plain)
    with pytest.raises(CharRNNError, match="-inf for every character"):
        sample_next(torch.zeros(2, 1), SampleConfig(), torch.rand(2))   # only <unk>


@pytest.mark.parametrize("options", [dict(), dict(greedy=True), dict(top_p=0.5, top_k=2)])
def test_nan_logits_are_a_clear_error(options):
    logits = torch.randn(4, 13)
    logits[2, 7] = float("nan")
    with pytest.raises(CharRNNError, match="logits hold nan .*the checkpoint is broken"):
        sample_next(logits, SampleConfig(**options), torch.rand(4))
    logits[2, 7] = float("inf")
    with pytest.raises(CharRNNError, match="logits hold inf.*the checkpoint is broken"):
        sample_next(logits, SampleConfig(**options), torch.rand(4))


# The seed rule.

def test_the_seed_of_a_sample_is_fixed_once():
    assert [sample_seed(5, i) for i in range(3)] == [
        3937460233806143885, 4610495411817870619, 210380050966385637]
    assert all(0 <= sample_seed(s, i) <= SEED_MAX for s in (0, SEED_MAX) for i in (0, 65535))


def test_row_uniforms_give_each_row_its_own_generator():
    seeds = [sample_seed(1, 0), sample_seed(1, 1)]
    uniforms = RowUniforms(seeds)
    drawn = torch.stack([uniforms.next() for _ in range(UNIFORM_BLOCK + 10)])
    assert drawn.dtype == torch.float64 and drawn.shape == (UNIFORM_BLOCK + 10, 2)
    for row, seed in enumerate(seeds):
        stream = torch.rand(UNIFORM_BLOCK + 10, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(seed))
        assert torch.equal(drawn[:, row], stream)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_sample_does_not_depend_on_its_batch(cell):
    model = _untrained(cell)
    eight = _sample(model, length=100, seed=5, num_samples=8)
    assert _sample(model, length=100, seed=5, num_samples=4) == eight[:4]
    assert _sample(model, length=100, seed=5, num_samples=1) == eight[:1]


@torch.no_grad()
def test_the_random_numbers_do_not_depend_on_the_prime():
    """docs/sampling.md: two primes with one seed draw the same numbers, so where the model
    predicts alike the texts agree. A model deaf to its input predicts alike everywhere."""
    model = _untrained()
    for name, weight in model.named_parameters():
        if not name.startswith("head"):
            weight.zero_()          # every hidden state is 0: the logits are the head's bias
    model.head.bias.copy_(torch.linspace(-1, 1, TOKENIZER.vocab_size))
    first, second = _sample(model, "ab", length=60, seed=3), _sample(model, "jij", length=60, seed=3)
    assert first[0][2:] == second[0][3:]
    assert _sample(model, "ab", length=60, seed=4)[0][2:] != first[0][2:]


@torch.no_grad()
def test_sample_i_is_the_reference_step_driven_by_its_own_seed():
    model, seed, length = _untrained(), 7, 80
    config = SampleConfig(length=length, seed=seed, num_samples=3, temperature=0.8, top_k=10)
    third = generate(model, TOKENIZER, "ab", config)[2]
    uniforms = RowUniforms([sample_seed(seed, 2)])
    logits, hidden = model.step(torch.tensor([1]), model.init_hidden(1))   # "a"
    current, text = torch.tensor([2]), "ab"
    for _ in range(length):
        logits, hidden = model.step(current, hidden)
        current = sample_next(logits, config, uniforms.next())
        text += TOKENIZER.decode(current.tolist())
    assert third == text


def test_without_a_seed_the_seed_is_drawn_from_torch_and_the_rule_applies():
    model = _untrained()
    torch.manual_seed(11)
    unseeded = _sample(model, length=40, num_samples=2)
    torch.manual_seed(11)
    seed = int(torch.randint(SEED_MAX, ()).item())
    assert unseeded == _sample(model, length=40, num_samples=2, seed=seed)


# generate.

def test_a_stop_string_ends_a_sample_where_it_first_appears():
    model = _untrained()
    full = _sample(model, length=60, seed=3, num_samples=6)
    stopped = _sample(model, length=60, seed=3, num_samples=6, stop="a ")
    ends = [whole.find("a ", 2) for whole in full]    # in the generated part, after "ab"
    assert {at >= 0 for at in ends} == {True, False}  # both cases occur with this seed
    for whole, text, at in zip(full, stopped, ends):
        assert text == (whole[:at + 2] if at >= 0 else whole)


def test_on_text_streams_every_character_of_every_sample():
    streamed = {0: [], 1: [], 2: []}
    texts = _sample(_untrained(), length=30, seed=1, num_samples=3, stop="b",
                    on_text=lambda row, char: streamed[row].append(char))
    assert [t[2:] for t in texts] == ["".join(streamed[row]) for row in range(3)]


def test_an_empty_prime_starts_after_a_newline_or_the_first_character():
    model = _untrained()
    assert _sample(model, "", length=30, seed=2) == [t[1:] for t in _sample(model, "\n",
                                                                          length=30, seed=2)]
    letters = CharTokenizer("xyz")
    small = _untrained(tokenizer=letters)
    config = SampleConfig(length=30, seed=2)
    assert generate(small, letters, "", config) == \
        [t[1:] for t in generate(small, letters, "x", config)]


@torch.no_grad()
def test_greedy_follows_the_largest_logit_of_the_reference_step():
    model = _untrained("gru")
    text = _sample(model, "c", length=40, greedy=True)[0]
    current, hidden = torch.tensor([3]), model.init_hidden(1)
    expected = "c"
    for _ in range(40):
        logits, hidden = model.step(current, hidden)
        current = logits[:, 1:].argmax(-1) + 1
        expected += TOKENIZER.decode(current.tolist())
    assert text == expected


def test_zero_length_and_bf16():
    model = _untrained()
    assert _sample(model, "cab", length=0, num_samples=2) == ["cab", "cab"]
    texts = _sample(model, length=50, seed=4, num_samples=3, precision="bf16")
    assert [len(t) for t in texts] == [52] * 3
    assert texts == _sample(model, length=50, seed=4, num_samples=3, precision="bf16")


def test_prime_with_unseen_characters_is_a_clear_error():
    with pytest.raises(CharRNNError, match="never saw: 'Z'"):
        _sample(_untrained(), "Zebra", length=5)


@pytest.mark.parametrize("options,message", [
    (dict(temperature=0), "temperature must be"), (dict(temperature=-1), "temperature must be"),
    (dict(top_p=0), "top_p must be"), (dict(top_p=1.5), "top_p must be"),
    (dict(top_k=0), "top_k must be"), (dict(length=-1), "length must be"),
    (dict(num_samples=0), "num_samples must be"),
    (dict(precision="fp16"), "precision must be one of fp32, bf16, got 'fp16'"),
    (dict(stop=""), "stop must not be empty")])
def test_bad_sampling_options_are_clear_errors(options, message):
    with pytest.raises(CharRNNError, match=message):
        _sample(_untrained(), **options)


def test_a_trained_checkpoint_samples_through_the_api(trained):
    """Through load() and Model.generate: the same texts as the sampler gives directly."""
    model = charrnn.load(trained)
    texts = model.generate("the", length=40, n=3, seed=2)
    assert texts == generate(model.net, model.tokenizer, "the",
                             SampleConfig(length=40, num_samples=3, seed=2))
    assert model.generate("the", length=40, seed=2) == texts[0]
    assert len(model.generate("the", length=40, seed=2, precision="bf16")) == 43


def test_each_row_may_have_its_own_options():
    """sample_rows, which the engine runs: row i's id is what sample_next gives for row i
    alone with row i's options, whatever the other rows ask for."""
    from charrnn.sampling.choice import RowOptions, sample_rows
    kinds = [SampleConfig(), SampleConfig(greedy=True), SampleConfig(temperature=0.3),
             SampleConfig(top_k=2), SampleConfig(top_p=0.5),
             SampleConfig(temperature=1.5, top_k=5, top_p=0.8, greedy=False)]
    configs = [kinds[i % len(kinds)] for i in range(60)]
    logits = torch.randn(60, 13, generator=torch.Generator().manual_seed(8))
    uniform = torch.rand(60, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    options = RowOptions(60, 13)
    for row, config in enumerate(configs):
        options.set(row, config)
    ids = sample_rows(logits, options, uniform)
    alone = [sample_next(logits[i:i + 1], config, uniform[i:i + 1]).item()
             for i, config in enumerate(configs)]
    assert ids.tolist() == alone
    assert ids.tolist() != sample_next(logits, SampleConfig(), uniform).tolist()
