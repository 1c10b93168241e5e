"""Export to ONNX: every cell and depth exports, matches PyTorch within the stated tolerance
over 1000 teacher-forced characters, samples outside charrnn with onnxruntime alone, and an
export that does not match is refused (nothing written) unless forced."""
import json
import re

import numpy as np
import onnxruntime
import pytest
import torch
from click.testing import CliRunner

import charrnn
from charrnn import CharRNN, CharRNNError, CharTokenizer, ModelConfig
from charrnn.cli.commands import main
from charrnn.export.onnx import LOGIT_TOLERANCE, OPSET, PARITY_CHARS, TV_TOLERANCE, export_onnx

TOKENIZER = CharTokenizer("abcdefghij \n")


def _net(cell, layers):
    torch.manual_seed(layers)
    return CharRNN(ModelConfig(vocab_size=TOKENIZER.vocab_size, cell=cell, layers=layers,
                               hidden_size=24, embed_size=8)).eval()


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_every_cell_exports_and_matches_pytorch(cell, layers, tmp_path):
    _exports_and_matches(cell, layers, tmp_path)


@pytest.mark.parametrize("cell,layers", [("mingru", 2), ("minlstm", 1)])
def test_the_min_cells_export_and_match_pytorch(cell, layers, tmp_path):
    """mingru and minlstm (Feng et al. 2024): their step, norms and MLP included, exports with
    the state [layers, batch, hidden] as for gru."""
    _exports_and_matches(cell, layers, tmp_path)


def _exports_and_matches(cell, layers, tmp_path):
    net = _net(cell, layers)
    parity = export_onnx(net, TOKENIZER, tmp_path / "out")
    assert parity.chars == PARITY_CHARS and parity.ok
    assert parity.max_logit_diff <= LOGIT_TOLERANCE and parity.max_tv <= TV_TOLERANCE
    description = json.loads((tmp_path / "out" / "charrnn.json").read_text())
    assert description["opset"] == OPSET and description["parity"]["ok"]
    assert description["model"]["cell"] == cell and description["model"]["layers"] == layers
    # The batch stays free: three rows at once give what CharRNN.step gives.
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    ids = torch.tensor([1, 5, 9])
    hidden = tuple(torch.randn(layers, 3, 24) for _ in ("h", "c")[:1 + (cell == "lstm")])
    feeds = {"ids": ids.numpy(), **{n: h.numpy() for n, h in zip(("h", "c"), hidden)}}
    outputs = session.run(None, feeds)
    logits, expected_state = net.step(ids, hidden if cell == "lstm" else hidden[0])
    assert np.abs(outputs[0] - logits.detach().numpy()).max() <= LOGIT_TOLERANCE
    expected = expected_state if cell == "lstm" else (expected_state,)
    for got, want in zip(outputs[1:], expected):
        assert np.abs(got - want.detach().numpy()).max() <= 1e-5


def test_an_export_that_does_not_match_is_refused_unless_forced(tmp_path, monkeypatch):
    """An exporter that writes a wrong graph (here: another model's, whose output bias is off by
    0.01): parity catches it, and nothing is left behind."""
    net = _net("gru", 2)
    other = _net("gru", 2)
    with torch.no_grad():
        other.head.bias.add_(0.01)            # a small but real difference
    from charrnn.export import onnx as export
    real = export.write_graph
    monkeypatch.setattr(export, "write_graph", lambda _net, path: real(other, path))
    with pytest.raises(CharRNNError, match=r"does not match PyTorch: .*largest logit "
                                           r"difference 1\.00e-02 .*nothing was written"):
        export_onnx(net, TOKENIZER, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    parity = charrnn.Model(net, TOKENIZER).export(tmp_path / "out", force=True)   # the API
    assert not parity.ok and (tmp_path / "out" / "model.onnx").exists()
    assert json.loads((tmp_path / "out" / "charrnn.json").read_text())["parity"]["ok"] is False


def test_export_refuses_a_folder_that_holds_something_else(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(CharRNNError, match="is not an earlier charrnn export"):
        export_onnx(_net("rnn", 1), TOKENIZER, tmp_path / "run")
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_the_cli_exports_a_run_and_prints_the_parity_figures(trained, tmp_path):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "charrnn.json").write_text("{}")          # an earlier export: it is replaced
    (out / "old.onnx").write_text("")
    result = CliRunner().invoke(main, ["export", str(trained), "--format", "onnx", "--out",
                                       str(out)])
    assert result.exit_code == 0, result.output
    assert re.search(r"largest logit difference \S+ \(tolerance 1e-03\), largest "
                     r"next-character total-variation distance \S+ \(tolerance 1e-04\)",
                     result.output)
    assert sorted(p.name for p in out.iterdir()) == ["charrnn.json", "model.onnx",
                                                     "tokenizer.json"]
    assert charrnn.CharTokenizer.load(out / "tokenizer.json").chars == \
        charrnn.load(trained).tokenizer.chars
    missing = CliRunner().invoke(main, ["export", str(trained)])
    assert missing.exit_code == 1 and "error: --out must be given" in missing.output
