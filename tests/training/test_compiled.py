"""--compile (charrnn/training/compiled.py): the wrapper's contract with a stub compiler, and, with
CHARRNN_SLOW_TESTS=1 (.ci/run runs it after make test: compiling takes ~30 s), a real compiled
run against the eager one."""
import os

import pytest
import torch

from charrnn import CharRNN, ModelConfig
from charrnn.errors import CharRNNError
from charrnn.training import compiled as compiled_module
from charrnn.training.compiled import Compiled, compiled

from conftest import make_corpus, tiny_config

SLOW = pytest.mark.skipif(os.environ.get("CHARRNN_SLOW_TESTS") != "1",
                          reason="compiles for ~30 s: CHARRNN_SLOW_TESTS=1 (.ci/run sets it)")


def _net(cell="mingru"):
    shape = dict(expansion=1, mlp_ratio=1) if cell == "mingru" else {}
    return CharRNN(ModelConfig(vocab_size=12, cell=cell, layers=1, hidden_size=8, embed_size=4,
                               **shape))


def _stub_compiler(monkeypatch, behaviour):
    calls = []

    def fake_compile(module, dynamic):
        assert dynamic is False
        def run(inputs, hidden):
            calls.append(hidden)
            return behaviour(module, inputs, hidden)
        return run
    monkeypatch.setattr(compiled_module.torch, "compile", fake_compile)
    return calls


def test_off_is_the_module_itself():
    net = _net()
    assert compiled(net, net, False) is net


@pytest.mark.parametrize("cell", ["mingru", "lstm"])
def test_a_first_chunk_gets_a_zero_state_not_none_so_one_graph_serves(monkeypatch, cell):
    calls = _stub_compiler(monkeypatch, lambda m, x, h: m(x, h))
    net = _net(cell)
    wrapped = compiled(net, net, True)
    inputs = torch.randint(0, 12, (3, 5))
    logits, hidden = wrapped(inputs, None)
    expected, _ = net(inputs, None)
    first = calls[0][0] if cell == "lstm" else calls[0]
    assert first is not None and first.shape == (1, 3, 8) and not first.any()
    torch.testing.assert_close(logits, expected)
    wrapped(inputs, hidden)
    assert calls[1] is hidden


def test_a_compiler_failure_is_one_line(monkeypatch):
    failure = type("BackendCompilerFailed", (Exception,), {"__module__": "torch._dynamo.exc"})

    def fail(module, inputs, hidden):
        raise failure("backend='inductor' raised:\nCppCompileError: C++ compile error\n...")
    _stub_compiler(monkeypatch, fail)
    net = _net()
    with pytest.raises(CharRNNError) as caught:
        Compiled(net, net)(torch.zeros(2, 3, dtype=torch.long), None)
    message = str(caught.value)
    assert "\n" not in message and "--compile failed" in message
    assert "backend='inductor' raised:" in message and "without --compile" in message


def test_other_errors_pass_through(monkeypatch):
    def fail(module, inputs, hidden):
        raise ValueError("not the compiler's")
    _stub_compiler(monkeypatch, fail)
    net = _net()
    with pytest.raises(ValueError, match="not the compiler's"):
        Compiled(net, net)(torch.zeros(2, 3, dtype=torch.long), None)


@SLOW
def test_a_compiled_min_cell_run_matches_the_eager_one(tmp_path):
    from charrnn.api import train_run
    corpus = make_corpus(tmp_path / "c.txt", chars=5_000)
    losses = {}
    for flag in (False, True):
        config = tiny_config(tmp_path / f"run-{flag}", steps=4, eval_interval=4,
                             compile=flag, precision="fp32")
        config.model.cell, config.model.expansion, config.model.mlp_ratio = "mingru", 1, 2
        losses[flag] = train_run(str(corpus), config).val_loss
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
