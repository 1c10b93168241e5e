"""FastStep, the sampler's optimised step, against the reference CharRNN.step and forward."""
import pytest
import torch

from charrnn import CharRNN, CharRNNError, ModelConfig
from charrnn.sampling.fast_step import FastStep, from_layers, to_layers
from charrnn.model.network import hidden_parts

CLASSIC = ["rnn", "gru", "lstm"]
CELLS = CLASSIC + ["mingru", "minlstm"]    # the last two: Feng et al. 2024, charrnn/model/mincell.py


def _model(cell, layers, vocab=11, hidden=16, scale=1.0):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden_size=hidden,
                                embed_size=8)).eval()
    with torch.no_grad():
        for p in model.parameters():   # scale > 1: larger weights, confident predictions
            p.mul_(scale)
    return model


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_fp32_fast_step_gives_step_and_forward(cell, layers, batch):
    model = _model(cell, layers)
    fast = FastStep(model, batch)
    ids = torch.randint(0, 11, (batch, 12))
    hidden = fast_hidden = model.init_hidden(batch)
    with torch.no_grad():
        expected, _ = model(ids)
        for t in range(ids.shape[1]):
            logits, hidden = model.step(ids[:, t], hidden)
            fast_logits, fast_hidden = fast(ids[:, t], fast_hidden)
            assert fast_logits.dtype == torch.float32 and fast_logits.shape == (batch, 11)
            assert (fast_logits - logits).abs().max() <= 1e-5
            assert (fast_logits - expected[:, t]).abs().max() <= 1e-5
    for part, fast_part in zip(hidden_parts(hidden), hidden_parts(fast_hidden)):
        assert (fast_part - part).abs().max() <= 1e-5
    if torch.backends.mkldnn.is_available():   # the oneDNN-packed path is the one under test
        assert fast.onednn


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_bf16_fast_step_stays_close_in_distribution(cell, layers, batch):
    # A min-cell step rounds the inputs of 4 products per block to bf16 (12 here, against 3
    # for an lstm), through a residual stream that nothing saturates: with these weights x3
    # its worst row moves by up to 0.12 in total variation, so it is held to 0.01 at x1 (where
    # it is about 1e-3); docs/performance.md.
    model = _model(cell, layers, vocab=40, scale=3.0 if cell in CLASSIC else 1.0)
    fast = FastStep(model, batch, "bf16")
    ids = torch.randint(0, 40, (batch, 12))
    hidden = model.init_hidden(batch)
    with torch.no_grad():
        expected, _ = model(ids)
        for t in range(ids.shape[1]):
            # Each bf16 step starts from the exact state, so this measures one step's rounding
            # (over many steps any rounding makes a chaotic trajectory drift, fp32 included).
            logits, _ = fast(ids[:, t], hidden)
            exact, hidden = model.step(ids[:, t], hidden)
            assert logits.dtype == torch.float32
            for reference in (exact, expected[:, t]):
                distance = 0.5 * (logits.softmax(-1) - reference.softmax(-1)).abs().sum(-1)
                assert distance.max() < 0.01   # total variation between next-char distributions


@pytest.mark.parametrize("cell", CELLS)
def test_fp32_rows_do_not_depend_on_the_batch(cell):
    """Row i stepped in a batch of 8 equals, bit for bit, row i stepped alone or in a batch of
    4: the sampler's seed rule (a sample's text is independent of its batch) relies on it."""
    model = _model(cell, 2, hidden=32)
    ids = torch.randint(0, 11, (8, 10))
    runs = {}
    with torch.no_grad():
        for batch in (1, 4, 8):
            fast, layers, steps = FastStep(model, batch), to_layers(model.init_hidden(batch)), []
            if not fast.onednn:
                pytest.skip("bit-identical rows are promised for oneDNN's CPU path only")
            for t in range(ids.shape[1]):
                logits, layers = fast.step_layers(ids[:batch, t], layers)
                steps.append(logits)
            runs[batch] = torch.stack(steps, 1)
    assert torch.equal(runs[8][:4], runs[4]) and torch.equal(runs[8][:1], runs[1])


def test_layer_lists_round_trip_and_inputs_are_left_alone():
    model = _model("lstm", 2)
    hidden = tuple(torch.randn(2, 3, 16) for _ in range(2))
    copies = tuple(h.clone() for h in hidden)
    layers = to_layers(hidden)
    assert len(layers) == 2 and len(layers[0]) == 2 and layers[0][1].shape == (3, 16)
    assert all(torch.equal(a, b) for a, b in zip(from_layers(layers), hidden))
    with torch.no_grad():
        FastStep(model, 3).step_layers(torch.tensor([1, 2, 3]), layers)
    assert all(torch.equal(a, b) for a, b in zip(hidden, copies))


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(CharRNNError, match="precision must be one of fp32, bf16, got 'fp16'"):
        FastStep(_model("gru", 1), 1, "fp16")


@pytest.mark.parametrize("cell", CLASSIC)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_weight_bytes_and_flops_count_every_product_once(cell, precision):
    """The benchmark's bounds: a step reads each product's weight and bias once (in the
    step's precision; the output layer and one input-table row in fp32) and multiplies each
    weight once per row."""
    model = _model(cell, 2, vocab=11, hidden=16)
    fast, gates = FastStep(model, 1, precision), {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    size = {"fp32": 4, "bf16": 2}[precision]
    # layer 0: W_hh (+ b_hh for gru); layer 1: W_ih and W_hh (+ their biases); the head.
    recurrent = gates * 16 * 16 + (gates * 16 if cell == "gru" else 0)
    upper = gates * 16 * (16 + 16) + gates * 16 * (2 if cell == "gru" else 1)
    head = 11 * 16 + 11
    assert fast.weight_bytes() == size * (recurrent + upper) + 4 * head + 4 * gates * 16
    assert fast.flops_per_row() == 2 * (gates * 16 * 16 + gates * 16 * 32 + 11 * 16)


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_min_cell_weight_bytes_and_flops_count_every_block_product_once(cell):
    """Per block: cell_in [parts*16, 8], cell_out [8, 16], the MLP [32, 8] and [8, 32], each
    with its bias; then the head [11, 8] and one input-table row (width 8), all fp32."""
    model, parts = _model(cell, 2, vocab=11, hidden=16), {"mingru": 2, "minlstm": 3}[cell]
    fast = FastStep(model, 1)
    weights = parts * 16 * 8 + 8 * 16 + 32 * 8 + 8 * 32
    biases = parts * 16 + 8 + 32 + 8
    assert fast.weight_bytes() == 4 * (2 * (weights + biases) + 11 * 8 + 11 + 8)
    assert fast.flops_per_row() == 2 * (2 * weights + 11 * 8)
