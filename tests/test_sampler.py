import pytest
import torch

import charrnn
from charrnn import CharRNN, CharRNNError, ModelConfig
from charrnn.sampler import SampleOptions, Stepper, pick


def _step_through(model, ids, precision="fp32"):
    """Logits [batch, time, vocab] from the one-step network, fed ids[:, t] in turn."""
    config, batch = model.config, ids.shape[0]
    stepper = Stepper(model, batch, precision)
    zeros = torch.zeros(config.layers, batch, config.hidden_size)
    hidden = (zeros, zeros.clone()) if config.cell == "lstm" else zeros
    steps = []
    for t in range(ids.shape[1]):
        logits, hidden = stepper(ids[:, t], hidden)
        steps.append(logits)
    return torch.stack(steps, 1), stepper


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers,batch", [(1, 1), (2, 3), (3, 1)])
def test_fast_step_gives_the_same_logits_as_forward(cell, layers, batch):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=layers, hidden_size=16,
                                embed_size=8)).eval()
    ids = torch.randint(0, 11, (batch, 20))
    with torch.no_grad():
        expected, _ = model(ids)
        stepped, stepper = _step_through(model, ids)
    assert (stepped - expected).abs().max() <= 1e-5
    if torch.backends.mkldnn.is_available():   # the oneDNN-packed path is the one under test
        assert stepper.head.packed is not None


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_bf16_step_stays_close_to_forward_in_distribution(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=40, cell=cell, layers=2, hidden_size=64,
                                embed_size=16)).eval()
    with torch.no_grad():
        for p in model.parameters():   # larger weights than at init: confident predictions
            p.mul_(4)
        ids = torch.randint(0, 40, (4, 60))
        expected, _ = model(ids)
        exact, fast = Stepper(model, 4), Stepper(model, 4, "bf16")
        zeros = torch.zeros(2, 4, 64)
        hidden = (zeros, zeros.clone()) if cell == "lstm" else zeros
        for t in range(ids.shape[1]):
            # Each bf16 step starts from the exact state, so this measures one step's rounding
            # (over many steps any rounding makes a chaotic trajectory drift, fp32 included).
            logits, _ = fast(ids[:, t], hidden)
            _, hidden = exact(ids[:, t], hidden)
            assert logits.dtype == torch.float32
            distance = 0.5 * (logits.softmax(-1) - expected[:, t].softmax(-1)).abs().sum(-1)
            assert distance.max() < 0.01   # total variation between the next-char distributions
            assert (logits - expected[:, t]).abs().max() < 0.1


def test_same_seed_same_sample_other_seed_other_sample(trained):
    model = charrnn.load(trained)
    first = model.generate("to be", length=80, seed=3)
    assert first == model.generate("to be", length=80, seed=3)
    assert first != model.generate("to be", length=80, seed=4)
    assert first.startswith("to be") and len(first) == len("to be") + 80


def test_batch_of_samples_and_stop_string(trained):
    model = charrnn.load(trained)
    texts = model.generate("the", length=60, n=4, seed=1)
    assert isinstance(texts, list) and len(texts) == 4 and len(set(texts)) > 1
    stopped = model.generate("the", length=300, seed=1, stop="\n")
    assert stopped.endswith("\n") and stopped.count("\n") == 1


def test_bf16_sampling_runs_through_the_api(trained):
    model = charrnn.load(trained)
    texts = model.generate("the", length=40, n=3, seed=2, precision="bf16")
    assert len(texts) == 3 and all(len(t) == 43 and t.startswith("the") for t in texts)
    assert model.generate("the", length=40, seed=2, precision="bf16") == \
        model.generate("the", length=40, seed=2, precision="bf16")


def test_greedy_is_deterministic_without_a_seed(trained):
    model = charrnn.load(trained)
    assert model.generate("king", length=40, greedy=True) == \
        model.generate("king", length=40, greedy=True)


def test_top_k_one_equals_greedy():
    logits = torch.randn(5, 30)
    generator = torch.Generator().manual_seed(0)
    top1 = pick(logits, SampleOptions(top_k=1), generator)
    logits[:, 0] = -1e9  # the unknown token is never picked, so compare without it
    assert (top1 == logits.argmax(-1)).all()


def test_pick_draws_from_the_softmax_distribution():
    logits = torch.log(torch.tensor([[0.3, 0.0, 0.5, 0.15, 0.05, 0.0]])).expand(20000, -1)
    picked = pick(logits, SampleOptions(), torch.Generator().manual_seed(5))
    frequencies = torch.bincount(picked, minlength=6) / len(picked)
    # id 0 (unknown) and the zero-probability id 5 never come out; the rest within 0.01.
    assert frequencies[0] == 0 and frequencies[5] == 0 and frequencies[1] == 0
    expected = torch.tensor([0.0, 0.0, 0.5, 0.15, 0.05, 0.0]) / 0.7
    assert (frequencies - expected).abs().max() < 0.01


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.0001, 0.6, 0.3, 0.0999]]))
    generator = torch.Generator().manual_seed(0)
    picked = {pick(logits, SampleOptions(top_p=0.5), generator).item() for _ in range(50)}
    assert picked == {1}


def test_prime_with_unseen_characters_is_a_clear_error(trained):
    model = charrnn.load(trained)
    with pytest.raises(CharRNNError, match="never saw: 'Z'"):
        model.generate("Zebra", length=5)


@pytest.mark.parametrize("options", [dict(temperature=0), dict(temperature=-1), dict(top_p=0),
                                     dict(top_p=1.5), dict(top_k=0), dict(length=-1), dict(n=0),
                                     dict(precision="fp16")])
def test_bad_sampling_options_are_clear_errors(trained, options):
    model = charrnn.load(trained)
    with pytest.raises(CharRNNError):
        model.generate("the", **options)
