import dataclasses

import numpy as np
import pytest
import torch

from charrnn import CharRNN, ModelConfig
from charrnn.model.network import hidden_from_parts, hidden_parts, unigram_head_bias


def test_vanilla_rnn_matches_the_seed_formula_by_hand():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=7, cell="rnn", layers=2, hidden_size=5, embed_size=3))
    ids = torch.tensor([[1, 4, 2, 6, 0, 3]])
    logits, hidden = model(ids)
    rnn = model.rnn
    h = [torch.zeros(5), torch.zeros(5)]
    expected = []
    for t in range(ids.shape[1]):
        x = model.embed.weight[ids[0, t]]
        for layer in range(2):
            w_xh, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
            b = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
            h[layer] = torch.tanh(w_hh @ h[layer] + w_xh @ x + b)  # same weights every step
            x = h[layer]
        expected.append(model.head.weight @ x + model.head.bias)  # y_t = W_hy h_t
    assert torch.allclose(logits[0], torch.stack(expected), atol=1e-6)
    assert torch.allclose(hidden[:, 0], torch.stack(h), atol=1e-6)


def test_hidden_state_carries_across_calls():
    torch.manual_seed(0)
    for cell in ("rnn", "gru", "lstm"):
        model = CharRNN(ModelConfig(vocab_size=9, cell=cell, layers=2, hidden_size=8, embed_size=4))
        ids = torch.randint(0, 9, (3, 12))
        whole, _ = model(ids)
        first, hidden = model(ids[:, :5])
        second, _ = model(ids[:, 5:], hidden)
        assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)


def test_tiny_model_overfits_a_short_text():
    torch.manual_seed(0)
    text = "the quick brown fox jumps over the lazy dog. " * 4
    chars = sorted(set(text))
    ids = torch.tensor([[chars.index(c) for c in text]])
    model = CharRNN(ModelConfig(vocab_size=len(chars), cell="lstm", layers=1, hidden_size=64,
                                embed_size=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        logits, _ = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def _model(cell, layers=2, vocab=11, hidden=16, embed=8, seed=0):
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden_size=hidden,
                               embed_size=embed)).eval()


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_step_gives_forward_one_character_at_a_time(cell, layers, batch):
    model = _model(cell, layers)
    ids = torch.randint(0, 11, (batch, 15))
    hidden = model.init_hidden(batch)
    with torch.no_grad():
        expected, expected_hidden = model(ids, hidden)
        for t in range(ids.shape[1]):
            logits, hidden = model.step(ids[:, t], hidden)
            assert logits.shape == (batch, 11) and logits.dtype == torch.float32
            assert (logits - expected[:, t]).abs().max() <= 1e-5
    for part, expected_part in zip(hidden_parts(hidden), hidden_parts(expected_hidden)):
        assert (part - expected_part).abs().max() <= 1e-5


class _Step(torch.nn.Module):
    """``model.step`` as a module's forward, for torch.func.functional_call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, hidden):
        return self.model.step(ids, hidden)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_step_gradients_match_finite_differences(cell):
    """torch-rnn's gradient check: step's analytic gradients (autograd through the written-out
    gates) against central differences, in float64, for every weight and the incoming state."""
    step = _Step(_model(cell, layers=2, vocab=5, hidden=3, embed=2).double())
    names = [name for name, _ in step.named_parameters()]
    weights = [p.detach().clone().requires_grad_() for p in step.parameters()]
    ids = torch.tensor([1, 4])
    state = [torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
             for _ in hidden_parts(step.model.init_hidden(2))]

    def outputs(*inputs):
        params = dict(zip(names, inputs[:len(names)]))
        hidden = hidden_from_parts(list(inputs[len(names):]))
        logits, hidden = torch.func.functional_call(step, params, (ids, hidden))
        return (logits, *hidden_parts(hidden))

    assert torch.autograd.gradcheck(outputs, (*weights, *state))


def test_step_rejects_a_hidden_state_of_another_shape():
    model = _model("lstm", layers=2)
    with pytest.raises(ValueError, match=r"lstm hidden state must be a pair \(h, c\) of tensors "
                                         r"of shape \(2, 1, 16\), got \[\(2, 3, 16\)"):
        model.step(torch.tensor([1]), model.init_hidden(3))
    with pytest.raises(ValueError, match=r"gru hidden state must be a tensor"):
        _model("gru").step(torch.tensor([1]), model.init_hidden(1))


def _dropping(cell, p=0.4, layers=2, hidden=16):
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=layers, hidden_size=hidden,
                               embed_size=8, weight_drop=p)).train()


def _with_weights(model, weights):
    """A copy of ``model`` without weight drop whose recurrent weights are ``weights``."""
    copy = CharRNN(dataclasses.replace(model.config, weight_drop=0.0))
    copy.load_state_dict({**model.state_dict(), **{f"rnn.{k}": v for k, v in weights.items()}})
    return copy.train(model.training)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_weight_drop_is_forward_with_the_masked_weights_substituted(cell):
    model, ids = _dropping(cell), torch.randint(0, 11, (3, 9))
    torch.manual_seed(5)
    masked = model.dropped_weights()
    torch.manual_seed(5)
    logits, hidden = model(ids)
    expected, expected_hidden = _with_weights(model, masked)(ids)
    assert torch.equal(logits, expected)
    assert all(torch.equal(a, b) for a, b in zip(hidden_parts(hidden),
                                                  hidden_parts(expected_hidden)))
    # Every layer's mask is its own, and the next call (the next chunk) draws new ones.
    assert not torch.equal(masked["weight_hh_l0"] == 0, masked["weight_hh_l1"] == 0)
    assert not torch.equal(model(ids)[0], logits)


@pytest.mark.parametrize("p", [0.25, 0.3, 0.9])
def test_weight_drop_masks_are_bernoulli_and_scaled_to_keep_the_expectation(p):
    model = _dropping("lstm", p=p, layers=1, hidden=64)
    weight = model.rnn.weight_hh_l0
    masked = model.dropped_weights()["weight_hh_l0"]
    dropped = masked == 0
    # (p is honoured to 1/32768: 0.25 exactly)
    assert torch.allclose(masked[~dropped], weight[~dropped] / (1 - p), rtol=0.5 / 32768 / (1 - p),
                          atol=0)
    for entries in (dropped.flatten()[0::2], dropped.flatten()[1::2], dropped):
        n = entries.numel()        # the dropped count is Binomial(n, p): within 5 sd
        assert abs(int(entries.sum()) - n * p) < 5 * (n * p * (1 - p)) ** 0.5


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_weight_drop_trains_weight_hh_through_the_mask_under_bf16_autocast(cell):
    model, ids = _dropping(cell), torch.randint(0, 11, (3, 9))
    torch.manual_seed(7)
    masked = model.dropped_weights()
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(ids)
    assert logits.dtype == torch.bfloat16
    logits.float().sum().backward()
    for name, weights in masked.items():
        grad = getattr(model.rnn, name).grad
        assert torch.all(grad[weights == 0] == 0)          # a dropped weight learns nothing
        assert torch.count_nonzero(grad[weights != 0]) > 0.9 * int((weights != 0).sum())


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_weight_drop_changes_nothing_in_eval_mode_and_step(cell):
    model, ids = _dropping(cell).eval(), torch.randint(0, 11, (2, 6))
    plain = _with_weights(model, {})
    before = torch.get_rng_state()
    with torch.no_grad():
        assert torch.equal(model(ids)[0], plain(ids)[0])
        hidden = model.init_hidden(2)
        assert torch.equal(model.step(ids[:, 0], hidden)[0], plain.step(ids[:, 0], hidden)[0])
    assert torch.equal(torch.get_rng_state(), before)       # no mask was drawn


def test_unigram_head_bias_is_the_log_smoothed_frequencies_and_the_loss_their_entropy():
    ids = np.array([0, 1, 1, 2, 2, 2, 2, 4, 4, 1] * 7, dtype=np.uint16)
    model = _model("lstm", vocab=6)
    unigram_head_bias(model, ids, block=8)          # counted in blocks, a memmap's way
    counts = np.array([7, 21, 28, 0, 14, 0]) + 1.0
    expected = np.log(counts / counts.sum())
    assert torch.allclose(model.head.bias.double(), torch.from_numpy(expected), atol=1e-6)
    with torch.no_grad():                 # with no output weights the model is the unigram
        model.head.weight.zero_()
        logits, _ = model(torch.from_numpy(ids[None, :-1].astype(np.int64)))
    loss = torch.nn.functional.cross_entropy(logits[0], torch.from_numpy(ids[1:].astype(np.int64)))
    entropy = -np.mean(expected[ids[1:]])           # the text's cross-entropy under the unigram
    assert float(loss) == pytest.approx(entropy, abs=1e-6)
    with pytest.raises(ValueError, match=r"ids outside \[0, 6\)"):
        unigram_head_bias(model, np.array([1, 6]))


def _captured(model, ids):
    """The inputs of the recurrent layers and of the output layer in one forward call."""
    seen = {}
    hooks = [model.rnn.register_forward_hook(lambda m, a, out: seen.update(rnn=a[0])),
             model.head.register_forward_hook(lambda m, a, out: seen.update(head=a[0]))]
    with torch.no_grad():
        model(ids)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("where", ["rnn", "head"])
def test_locked_dropout_shares_one_mask_across_the_time_steps_of_a_chunk(cell, where):
    torch.manual_seed(0)
    p = 0.4
    options = dict(input_dropout=p) if where == "rnn" else dict(dropout=p, locked_dropout=True)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=1, hidden_size=32,
                                embed_size=24, **options))
    ids = torch.randint(0, 11, (16, 9))
    plain, dropped = _captured(model.eval(), ids)[where], _captured(model.train(), ids)[where]
    kept = dropped != 0                              # [batch, time, features]
    assert torch.equal(kept, kept[:, :1].expand_as(kept))           # the same at every step
    assert torch.allclose(dropped[kept], plain[kept] / (1 - p), rtol=1e-5, atol=1e-6)
    n = kept[:, 0].numel()                           # Binomial(n, p) dropped: within 5 sd
    assert abs(int((~kept[:, 0]).sum()) - n * p) < 5 * (n * p * (1 - p)) ** 0.5
    with torch.no_grad():
        assert torch.equal(model.eval()(ids)[0], model(ids)[0])      # eval: no dropout


def test_without_locked_dropout_the_output_masks_differ_per_time_step():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell="lstm", layers=1, hidden_size=32,
                                embed_size=8, dropout=0.5)).train()
    kept = _captured(model, torch.randint(0, 11, (16, 9)))["head"] != 0
    assert not torch.equal(kept, kept[:, :1].expand_as(kept))


@pytest.mark.parametrize("mask", ["paired", "bernoulli"])
@pytest.mark.parametrize("p", [0.25, 0.6])
def test_output_dropout_zeroes_a_fraction_p_and_scales_the_rest_in_training_only(p, mask):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell="lstm", layers=1, hidden_size=64,
                                embed_size=8, dropout=p, dropout_mask=mask))
    ids = torch.randint(0, 11, (32, 20))
    outputs = model.rnn(model.embed(ids))[0]           # what the head sees without dropout
    seen = _captured(model.train(), ids)["head"]
    dropped = seen == 0
    n = dropped.numel()          # the dropped count is Binomial(n, p): within 5 sd
    assert abs(int(dropped.sum()) - n * p) < 5 * (n * p * (1 - p)) ** 0.5
    assert torch.allclose(seen[~dropped], outputs[~dropped] / (1 - p), rtol=1e-4)
    assert torch.equal(_captured(model.eval(), ids)["head"], outputs)


def test_the_bernoulli_dropout_mask_is_f_dropouts_own_draw():
    model = CharRNN(ModelConfig(vocab_size=11, cell="lstm", layers=1, hidden_size=32,
                                embed_size=8, dropout=0.3, dropout_mask="bernoulli"))
    ids = torch.randint(0, 11, (4, 6))
    with torch.no_grad():
        outputs = model.rnn(model.embed(ids))[0]
    torch.manual_seed(5)
    seen = _captured(model.train(), ids)["head"]
    torch.manual_seed(5)
    assert torch.equal(seen, torch.nn.functional.dropout(outputs, 0.3, training=True))
