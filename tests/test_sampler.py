import pytest
import torch

import charrnn
from charrnn import CharRNN, CharRNNError, ModelConfig
from charrnn.sampler import SampleOptions, Stepper, pick


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_fast_step_gives_the_same_logits_as_forward(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden_size=16,
                                embed_size=8)).eval()
    ids = torch.randint(0, 11, (3, 20))
    with torch.no_grad():
        expected, _ = model(ids)
        stepper = Stepper(model)
        zeros = torch.zeros(2, 3, 16)
        hidden = (zeros, zeros.clone()) if cell == "lstm" else zeros
        for t in range(ids.shape[1]):
            logits, hidden = stepper(ids[:, t], hidden)
            assert torch.allclose(logits, expected[:, t], atol=1e-5)


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
                                     dict(top_p=1.5), dict(top_k=0), dict(length=-1), dict(n=0)])
def test_bad_sampling_options_are_clear_errors(trained, options):
    model = charrnn.load(trained)
    with pytest.raises(CharRNNError):
        model.generate("the", **options)
