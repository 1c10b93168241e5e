"""mingru and minlstm (Feng et al. 2024) and their log-space parallel scan (Heinsen 2023):
the scan against a plain per-step loop, its float64 gradients, a zero initial state, step
against forward across chunks, rows independent of the batch, fp32 under bf16 autocast, and
the options that do or do not apply."""
import pytest
import torch

from charrnn import CharRNN, ModelConfig, OptionError
from charrnn.model import mincell
from charrnn.model.mincell import SCAN_BLOCK, coefficients, log_coefficients, loop, scan

MIN_CELLS = ["mingru", "minlstm"]


def _inputs(cell, batch, time, units, scale=2.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    k = scale * torch.randn(batch, time, mincell.PARTS[cell] * units, generator=generator)
    return k, torch.randn(batch, units, generator=generator)


@pytest.mark.parametrize("cell", MIN_CELLS)
@pytest.mark.parametrize("time", [1, 7, SCAN_BLOCK, 64, 197])
@pytest.mark.parametrize("start", ["none", "zeros", "carried"])
def test_the_fp32_scan_equals_the_plain_loop_to_1e_5_relative(cell, time, start):
    """At chunk lengths 1, 7, 16, 64 and 197 (blocks of SCAN_BLOCK = 16 steps), gate
    pre-activations of standard deviation 2, from no state,
    a zero state and a carried one (a state the loop reached, so positive, as in training),
    each h_t of the scan is within 1e-5 of the loop's, relative to it (h > 0 throughout)."""
    k, _ = _inputs(cell, 3, time, 16)
    a, b = coefficients(cell, k)
    h0 = {"none": None, "zeros": torch.zeros(3, 16),
          "carried": loop(*coefficients(cell, _inputs(cell, 3, 40, 16, seed=1)[0]))[:, -1]}[start]
    expected = loop(a, b, h0)
    got = scan(*log_coefficients(cell, k), h0)
    assert got.dtype == torch.float32 and got.shape == (3, time, 16)
    assert ((got - expected).abs() / expected.abs()).max() <= 1e-5


def test_a_negative_carried_state_is_carried_as_it_is():
    """The carried state is never logged: any sign works (relative to the largest state)."""
    k, h0 = _inputs("mingru", 2, 50, 8)
    expected = loop(*coefficients("mingru", k), h0)
    got = scan(*log_coefficients("mingru", k), h0)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_the_scan_passes_a_float64_gradcheck_across_blocks():
    torch.manual_seed(0)
    log_a = (-torch.rand(2, 7, 3, dtype=torch.float64) * 2).requires_grad_()
    log_b = torch.randn(2, 7, 3, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(2, 3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, h: scan(a, b, h, block=3), (log_a, log_b, h0))


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_the_log_coefficients_pass_a_float64_gradcheck(cell):
    k = torch.randn(2, 4, mincell.PARTS[cell] * 3, dtype=torch.float64) * 3
    k = k.where(k.abs() > 1e-3, torch.full_like(k, 0.5)).requires_grad_()  # g's kink at 0
    assert torch.autograd.gradcheck(lambda x: log_coefficients(cell, x), (k,))


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_a_zero_initial_state_and_extreme_gates_give_finite_gradients(cell):
    """A zero state is no term (not log 0 = -inf, whose logcumsumexp backward is NaN); gates
    saturated far beyond float32's sigmoid range stay finite in log space. (Their accuracy is
    not 1e-5: log a = -1e4 makes |a*| ~ 5e4, and a* + logcumsumexp(..) keeps about
    6e-8 * |a*| of relative precision; the module docstring.)"""
    k, _ = _inputs(cell, 2, 20, 4)
    k[0, :5] = 1e4
    k[1, 5:10] = -1e4
    k.requires_grad_()
    h0 = torch.zeros(2, 4, requires_grad=True)
    h = scan(*log_coefficients(cell, k), h0)
    h.sum().backward()
    assert torch.isfinite(h).all() and torch.isfinite(k.grad).all()
    assert torch.isfinite(h0.grad).all()
    a, b = coefficients(cell, k.detach())
    assert torch.allclose(h.detach(), loop(a, b), rtol=1e-2, atol=0)


def _model(cell, layers=2, hidden=16, **options):
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=layers, hidden_size=hidden,
                               embed_size=8, **options))


@pytest.mark.parametrize("cell", MIN_CELLS)
@pytest.mark.parametrize("layers", [1, 3])
def test_step_gives_forward_across_chunks(cell, layers):
    """Two forward chunks (the second, 70 steps, spans two scan blocks), the state carried
    between them as training carries it, against CharRNN.step one character at a time."""
    model, ids = _model(cell, layers).eval(), torch.randint(0, 11, (3, 80))
    with torch.no_grad():
        first, hidden = model(ids[:, :10])
        second, hidden = model(ids[:, 10:], hidden)
        expected, state = torch.cat([first, second], 1), model.init_hidden(3)
        for t in range(ids.shape[1]):
            logits, state = model.step(ids[:, t], state)
            assert (logits - expected[:, t]).abs().max() <= 1e-5
    assert state.shape == (layers, 3, 16) and (state - hidden).abs().max() <= 1e-5


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_rows_do_not_depend_on_the_batch(cell):
    """Row i of a batch of 8 equals row i run alone (forward, to rounding; step, bit for bit
    in the fast sampler: tests/sampling/test_fast_step.py)."""
    model, ids = _model(cell).eval(), torch.randint(0, 11, (8, 30))
    with torch.no_grad():
        batched, hidden = model(ids)
        for row in (0, 5):
            alone, alone_hidden = model(ids[row:row + 1])
            assert (alone - batched[row:row + 1]).abs().max() <= 1e-6
            assert (alone_hidden - hidden[:, row:row + 1]).abs().max() <= 1e-6


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_the_scan_runs_in_fp32_under_bf16_autocast_and_trains(cell):
    model, ids = _model(cell), torch.randint(0, 11, (2, 20))
    with torch.no_grad():
        exact, _ = model(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, hidden = model(ids)
    assert hidden.dtype == torch.float32
    assert (logits.float() - exact).abs().max() < 0.1     # bf16 products, fp32 scan
    logits.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_dropout_acts_in_training_only(cell):
    model, ids = _model(cell, dropout=0.5, input_dropout=0.2), torch.randint(0, 11, (2, 12))
    torch.manual_seed(1)
    first, _ = model(ids)
    second, _ = model(ids)
    assert not torch.equal(first, second)
    model.eval()
    assert torch.equal(model(ids)[0], model(ids)[0])


def test_the_shape_options_and_what_does_not_apply():
    model = _model("minlstm", layers=2, hidden=24, expansion=3, mlp_ratio=0)
    assert model.head.weight.shape == (11, 8) and model.init_hidden(5).shape == (2, 5, 24)
    assert not model.rnn.blocks[0].mlp
    with pytest.raises(OptionError, match="weight_drop does not apply to mingru"):
        ModelConfig(cell="mingru", weight_drop=0.1).validate()
    with pytest.raises(OptionError, match="hidden_size is 10, not a multiple of expansion 4"):
        ModelConfig(cell="mingru", hidden_size=10, expansion=4).validate()
    with pytest.raises(OptionError, match="expansion applies to mingru and minlstm only"):
        ModelConfig(cell="lstm", expansion=3).validate()
    with pytest.raises(AttributeError):
        model.layer_weights(0)


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_the_parameter_count_without_a_model_is_the_models(cell):
    for options in (dict(), dict(expansion=4, mlp_ratio=0, layers=3)):
        config = ModelConfig(vocab_size=11, cell=cell, hidden_size=16, embed_size=8, **options)
        assert mincell.count_params(config) == CharRNN(config).num_params()


def test_a_min_cell_run_resumes_bit_for_bit_and_the_tools_read_it(tmp_path):
    """Training end to end on a tiny minlstm (a few seconds): interrupted at step 11 and
    resumed, it ends with the uninterrupted run's weights, bit for bit on the CPU (dropout's
    masks included); then the checkpoint loads, samples, reports (viz) and is checked for
    copying (novelty); --init-from extends its vocabulary."""
    import sys
    from pathlib import Path

    import charrnn
    from charrnn.api import train_run
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import make_corpus, tiny_config

    corpus = make_corpus(tmp_path / "corpus.txt", chars=6000)
    model = ModelConfig(cell="minlstm", layers=2, hidden_size=32, embed_size=8, dropout=0.1)
    config = dict(steps=16, eval_interval=8, model=model)
    train_run(str(corpus), tiny_config(tmp_path / "straight", **config))
    stopped = train_run(str(corpus), tiny_config(tmp_path / "split", **config),
                        callback=lambda step, metrics: step == 11)
    assert stopped.stopped_by == "callback"
    train_run(str(corpus), tiny_config(tmp_path / "split", resume=True, **config))
    a, b = (charrnn.load(tmp_path / run / "last", device="cpu").net.state_dict()
            for run in ("straight", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    loaded = charrnn.load(tmp_path / "straight" / "last", device="cpu")
    text = loaded.generate("to be", length=60, seed=1)
    assert text == loaded.generate("to be", length=60, seed=1) and len(text) == 65
    summary = loaded.report("to be or not to be, the king", tmp_path / "report.html",
                            gradient_steps=8)
    assert (tmp_path / "report.html").stat().st_size > 1000 and summary is not None
    assert loaded.novelty(text, prime="to be", corpus=str(corpus),
                          cache_dir=str(tmp_path / "cache")).samples
    german = tmp_path / "german.txt"
    german.write_text("Grüße aus München, schöne Straße. " * 100, encoding="utf-8")
    tuned = train_run(str(german), tiny_config(tmp_path / "tuned", steps=4, eval_interval=4,
                                               init_from=str(tmp_path / "straight")))
    grown = charrnn.load(Path(tuned.out) / "last", device="cpu").net
    assert grown.config.cell == "minlstm"
    assert grown.config.vocab_size == loaded.net.config.vocab_size + 8     # , . G S s ß ö ü
