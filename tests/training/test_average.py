"""The weights' moving average (charrnn/training/average.py, --ema): the update, the swap in and out,
and the rule that the average is the model (validation, best/, last/, samples) while
trainer_state.pt keeps the raw weights so that --resume stays exact."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

import charrnn
from charrnn import CharRNN, ModelConfig
from charrnn.api import train_run
from charrnn.training.average import WARMUP, WeightAverage
from conftest import tiny_config


def _model(seed=0):
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=7, cell="gru", layers=1, hidden_size=6, embed_size=3))


def _nudge(model, seed):
    """Change every weight a little, as an optimizer step would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator))


def test_the_average_follows_the_warmed_up_decay():
    model = _model()
    average = WeightAverage(model, 0.8)
    expected = [p.detach().clone().double() for p in model.parameters()]
    for step in range(1, 60):
        _nudge(model, step)
        average.update(step)
        decay = min(0.8, (1 + step) / (WARMUP + step))
        expected = [decay * e + (1 - decay) * p.detach().double()
                    for e, p in zip(expected, model.parameters())]
    assert 2 / (WARMUP + 1) < 0.8 < 60 / (WARMUP + 59)      # both regimes were crossed
    for got, want in zip(average.average, expected):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_applied_swaps_the_average_in_and_the_raw_weights_back_bit_for_bit():
    model = _model()
    average = WeightAverage(model, 0.5)
    _nudge(model, 1)
    average.update(1)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied():
        inside = {k: v.clone() for k, v in model.state_dict().items()}
        with average.applied():                 # nested: still the average
            assert all(torch.equal(inside[k], v) for k, v in model.state_dict().items())
        state = average.state()
    assert all(torch.equal(inside[name], a) for name, a in zip(average.names, average.average))
    assert all(torch.equal(raw[k], v) for k, v in model.state_dict().items())
    assert not all(torch.equal(raw[k], inside[k]) for k in raw)
    # trainer_state.pt's entries are the raw weights and the average, inside or outside.
    assert all(torch.equal(state["weights"][k], raw[k]) for k in raw)
    assert all(torch.equal(state["ema"][k], inside[k]) for k in raw)
    assert {k: torch.equal(v, average.state()["weights"][k]) for k, v in raw.items()} == \
        {k: True for k in raw}


def test_restore_puts_back_the_raw_weights_and_the_average():
    model, other = _model(0), _model(1)
    average = WeightAverage(model, 0.5)
    _nudge(model, 1)
    average.update(1)
    saved = average.state()
    restored = WeightAverage(other, 0.5)
    restored.restore(saved)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in saved["weights"].items())
    assert all(torch.equal(a, b) for a, b in zip(restored.average, average.average))


def test_off_does_nothing():
    model = _model()
    average = WeightAverage(model, 0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    average.update(1)
    with average.applied():
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert average.state() is None and average.average == []


def _val_text(corpus, fraction=0.1):
    text = corpus.read_text(encoding="utf-8")
    return text[len(text) - int(len(text) * fraction):]


def test_the_average_is_what_validation_measures_and_the_checkpoints_hold(corpus, tmp_path):
    config = tiny_config(tmp_path / "run", steps=20, eval_interval=10, ema=0.9, sample_every=20)
    result = train_run(str(corpus), config)
    last = tmp_path / "run" / "last"
    state = torch.load(last / "trainer_state.pt", weights_only=True)
    weights = load_file(last / "model.safetensors")
    assert all(torch.equal(weights[k], state["ema"][k]) for k in weights)
    assert not all(torch.equal(weights[k], state["weights"][k]) for k in weights)
    model = charrnn.load(last)
    loss = model.evaluate(_val_text(corpus), seq_len=config.seq_len)[0]
    assert loss == pytest.approx(result.val_loss, abs=1e-6)
    best = load_file(tmp_path / "run" / "best" / "model.safetensors")
    assert math.isclose(result.best_val_loss, result.val_loss) <= all(
        torch.equal(best[k], weights[k]) for k in weights)
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[-1])
    assert model.generate(sample["prime"], length=200, temperature=0.8,
                          seed=sample["seed"]) == sample["text"]
    saved = json.loads((last / "config.json").read_text())
    assert saved["train"]["ema"] == 0.9
