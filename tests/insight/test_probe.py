"""The report's measurements: the states read with CharRNN.step are the fused forward's, the
surprisal is the cross-entropy, and the gradient curve is exact where the answer is known and
says what the theory says (a tanh rnn forgets faster than an lstm)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn import CharRNN, ModelConfig
from charrnn.model.network import hidden_parts
from charrnn.insight.probe import gradient_curve, lstm_gates, trace


def _model(cell, layers=2, vocab=13, hidden=16, embed=8, seed=0):
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden_size=hidden,
                               embed_size=embed)).eval()


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_every_layers_states_agree_with_the_fused_forward(cell):
    model = _model(cell, layers=3)
    ids = np.random.default_rng(1).integers(0, 13, 40)
    reading = trace(model, ids, start_id=5)
    assert reading.kinds == (["h", "c"] if cell == "lstm" else ["h"])
    hidden = model.init_hidden(1)
    with torch.no_grad():
        _, hidden = model(torch.tensor([[5]]), hidden)
        for t, char in enumerate(ids):     # the fused layers, one character at a time
            _, hidden = model(torch.tensor([[int(char)]]), hidden)
            for kind, part in zip(reading.kinds, hidden_parts(hidden)):
                assert np.abs(reading.states[kind][:, t] - part[:, 0].numpy()).max() <= 1e-5
        outputs, _ = model.rnn(model.embed(torch.tensor([[5, *ids.tolist()]])))
    # and the top layer's h over the whole text is what the fused forward outputs
    assert np.abs(reading.states["h"][-1] - outputs[0, 1:].numpy()).max() <= 1e-5


def test_surprisal_and_guesses_are_the_models_own():
    model = _model("lstm")
    ids = np.random.default_rng(2).integers(0, 13, 30)
    reading = trace(model, ids, start_id=3)
    with torch.no_grad():
        logits, _ = model(torch.tensor([[3, *ids.tolist()]]))
    logits = logits[0, :-1]
    bits = F.cross_entropy(logits, torch.as_tensor(ids), reduction="none") / math.log(2)
    assert np.allclose(reading.bits, bits.numpy(), atol=1e-4)
    probs = torch.softmax(logits, -1)
    probs[:, 0] = -1                         # <unk> is never a guess
    top = torch.topk(probs, 5)
    assert (reading.top_ids == top.indices.numpy()).all()
    assert np.allclose(reading.top_probs, top.values.numpy(), atol=1e-6)


@pytest.mark.parametrize("a", [0.5, 0.9, 1.2])
def test_a_linear_recurrence_gives_a_norm_proportional_to_a_to_the_k(a):
    # tanh rnn with no input and no bias: the state stays 0, where tanh' = 1, so each step
    # back multiplies the gradient by W_hh^T = a*I exactly.
    model = _model("rnn", layers=1, hidden=24)
    with torch.no_grad():
        model.rnn.weight_ih_l0.zero_()
        model.rnn.bias_ih_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
        model.rnn.weight_hh_l0.copy_(a * torch.eye(24))
    ids = np.random.default_rng(3).integers(1, 13, 100)
    reading = trace(model, ids, start_id=1)
    curve = gradient_curve(model, ids, reading.states, k_max=20)
    k = np.arange(1, 21)
    assert np.allclose(curve / curve[0], a ** (k - 1), rtol=1e-5)
    # and curve[0] itself: a * mean over places of ||W_head^T (p - onehot)||
    head = model.head
    probs = torch.softmax(head.bias.detach(), -1)
    places = np.unique(np.linspace(20, 98, 32).round()).astype(int)
    norms = [(head.weight.detach().T @ (probs - F.one_hot(torch.tensor(int(ids[t + 1])), 13)))
             .norm().item() for t in places]
    assert curve[0] == pytest.approx(a * np.mean(norms), rel=1e-5)


def test_the_tanh_rnn_forgets_faster_than_the_lstm():
    """Averaged over five models each (fixed seeds, random text), the log-slope of the curve
    of a tanh rnn is far steeper than an lstm's of the same size (the forget gate keeps the
    cell's gradient: Hochreiter and Schmidhuber, 1997)."""
    ids = np.random.default_rng(4).integers(1, 20, 300)
    k = np.arange(1, 31)

    def slopes(cell):
        found = []
        for seed in range(5):
            model = _model(cell, layers=1, vocab=20, hidden=64, embed=16, seed=seed)
            curve = gradient_curve(model, ids, trace(model, ids, 1).states, k_max=30)
            found.append(np.polyfit(k, np.log(curve), 1)[0])    # log-norm per character
        return np.array(found)

    rnn, lstm = slopes("rnn"), slopes("lstm")
    # measured: rnn about -0.6 per character, lstm about -0.19 (factors 0.55 and 0.83)
    assert rnn.max() < lstm.min()
    assert rnn.mean() < lstm.mean() - 0.2


def test_a_text_too_short_for_the_curve_is_refused():
    model = _model("gru", layers=1)
    ids = np.array([1, 2, 3])
    with pytest.raises(ValueError, match="needs at least 7 characters"):
        gradient_curve(model, ids, trace(model, ids, 1).states, k_max=5)


def test_the_lstm_gates_are_the_ones_that_wrote_each_state():
    """In every layer, c = f * c_before + i * g and h = o * tanh(c) at each step, the start
    step included; the gates of some units are those units' columns of all the gates."""
    model = _model("lstm", layers=3)
    ids = np.random.default_rng(5).integers(0, 13, 30)
    reading = trace(model, ids, start_id=4)
    gates = lstm_gates(model, reading)
    assert gates["f"].shape == (3, 30, 16)
    for layer in range(3):
        c_after, h_after = (np.concatenate([reading.start[kind][layer][None],
                                            reading.states[kind][layer][:-1]]) for kind in "ch")
        c_before = np.concatenate([np.zeros((1, 16)), c_after[:-1]])
        f, i, g, o = (gates[name][layer] for name in "figo")
        assert np.abs(f * c_before + i * g - c_after).max() < 1e-5
        assert np.abs(o * np.tanh(c_after) - h_after).max() < 1e-5
        assert f.min() >= 0 and f.max() <= 1 and g.min() >= -1 and g.max() <= 1
    some = {0: [3, 7], 1: [0, 15], 2: [8, 9]}
    chosen = lstm_gates(model, reading, some)
    for layer, units in some.items():
        # the same values, up to the rounding of a product over fewer columns (1 ulp here)
        np.testing.assert_allclose(chosen["o"][layer], gates["o"][layer][:, units],
                                   rtol=1e-6, atol=1e-7)
