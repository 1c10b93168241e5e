"""The HTML report (charrnn viz / Model.report): its figures, its limits and its bad input."""
import base64
import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import one_line_error, tiny_config

import charrnn
from charrnn import CharRNN, CharRNNError, ModelConfig, OptionError
from charrnn.cli.commands import main
from charrnn.config import ReportConfig
from charrnn.insight.probe import gradient_curve, lstm_gates, trace
from charrnn.insight.report import MAX_BYTES, MAX_VALUES, fall, write_report
from charrnn.insight.report_page import MIN_DECADES, curve_axis
from charrnn.insight.units import dequantise, shown


@pytest.fixture(scope="module")
def model(trained):
    return charrnn.load(trained, device="cpu")


def page_data(path):
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>',
                      path.read_text(encoding="utf-8"), re.S)
    return json.loads(found.group(1))


def test_the_mean_surprisal_is_the_models_cross_entropy(model, trained, tmp_path):
    text = (trained.parent / "corpus.txt").read_text(encoding="utf-8")[:700]
    summary = model.report(text, tmp_path / "r.html")
    ids = torch.as_tensor(model.tokenizer.encode("\n" + text).astype("int64"))
    with torch.no_grad():
        logits, _ = model.net(ids[None, :-1])
    bits = torch.nn.functional.cross_entropy(logits[0], ids[1:]).item() / math.log(2)
    assert summary.mean_bpc == pytest.approx(bits, rel=1e-5)
    assert summary.chars == 700 and not summary.notes
    assert (tmp_path / "r.html").stat().st_size == summary.size
    data = page_data(tmp_path / "r.html")
    assert data["text"] == text and len(data["bits"]) == 700
    assert f"{bits:.3f} bits per character" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_the_page_loads_nothing(model, tmp_path):
    model.report("to be or not to be\nthe king", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert not re.search(r"\b(src|href)\s*=", page)
    assert "http://" not in page and "https://" not in page and "@import" not in page
    assert "default-src 'none'" in page          # and the browser is told to load nothing


def test_a_long_text_is_cut_with_a_note(model, trained, tmp_path, capsys):
    summary = model.report_file(str(trained.parent / "corpus.txt"), tmp_path / "r.html",
                                max_chars=300)
    assert summary.chars == 300
    assert "note: the text is longer than 300 characters: the report covers the first 300" \
        in capsys.readouterr().err
    assert "covers the first 300" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_characters_outside_the_vocabulary_are_marked_and_left_out_of_the_mean(model, tmp_path):
    text = "the king ЖЖ love!"
    summary = model.report(text, tmp_path / "r.html")
    assert "3 characters are not in the model's vocabulary" in summary.notes[0]
    data = page_data(tmp_path / "r.html")
    assert data["unknown"] == [int(c in "Ж!") for c in text]
    known = [b for b, unknown in zip(data["bits"], data["unknown"]) if not unknown]
    assert summary.mean_bpc == pytest.approx(sum(known) / len(known), abs=0.01)
    assert (tmp_path / "r.html").read_text(encoding="utf-8").count('class="unk"') == 3


def _decoded(block, field="codes"):
    return np.frombuffer(base64.b64decode(block[field]), dtype=np.uint8)


def test_stored_units_are_cut_to_the_budget_with_a_note(model, tmp_path):
    text = "to be or not to be, the king and the queen\n" * 4
    budget = (len(text) + 1) * 2 * 5          # 5 units of h and c: T values and the start
    summary = write_report(model.net, model.tokenizer, text, tmp_path / "r.html",
                           ReportConfig(unit=40, state="hidden"), max_values=budget)
    assert summary.units_kept == 10 and summary.units_total == 128
    assert any("5 of the 64 units of each layer and state are stored" in n for n in summary.notes)
    data = page_data(tmp_path / "r.html")
    blocks = {(b["kind"], b["layer"]): b for b in data["blocks"]}
    assert 40 in blocks[("hidden", 0)]["units"]      # the one asked for is always kept
    assert len(_decoded(blocks[("cell", 0)])) == 5 * len(text)
    assert len(_decoded(blocks[("cell", 0)], "start")) == 5
    # no room left for the gates: none stored, and the page and the notes say so
    assert summary.gate_units == 0 and data["gates"] == []
    assert any("the gates of 0 of the 64 units" in n for n in summary.notes)
    assert "stored for no unit" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_the_gates_fill_the_room_the_states_leave(model, tmp_path):
    text = "to be or not to be, the king and the queen\n" * 4
    budget = (len(text) + 1) * 2 * 64 + 4 * len(text) * 3 + 5      # every state, 3 gate units
    summary = write_report(model.net, model.tokenizer, text, tmp_path / "r.html",
                           ReportConfig(unit=17, state="cell"), max_values=budget)
    data = page_data(tmp_path / "r.html")
    assert summary.units_kept == 128 and summary.gate_units == 3
    assert [b["gate"] for b in data["gates"]] == ["input gate", "forget gate", "cell candidate",
                                                  "output gate"]
    assert all(17 in b["units"] and len(b["units"]) == 3 for b in data["gates"])
    stored = sum(len(_decoded(b)) + len(_decoded(b, "start")) for b in data["blocks"]) + \
        sum(len(_decoded(b)) for b in data["gates"])
    assert budget - 5 == stored <= budget
    ids = model.tokenizer.encode(text).astype("int64")
    gates = lstm_gates(model.net, trace(model.net, ids, int(model.tokenizer.encode("\n")[0])))
    for block, gate in zip(data["gates"], "ifgo"):
        values = dequantise(_decoded(block)).reshape(3, len(text)).T        # [T, units]
        assert np.abs(values - gates[gate][0][:, block["units"]]).max() <= 1 / 255
    assert any("the gates of 3 of the 64 units of each layer" in n for n in summary.notes)


def test_the_state_view_holds_the_state_and_gates_behind_each_guess(model, tmp_path):
    """Column t of the stored gates, and the state after character t - 1 (the start state
    for t = 0), are what CharRNN.step computed before guessing character t, to 8 bits."""
    text = "ROMEO: to be or not to be\nthe king"
    summary = model.report(text, tmp_path / "r.html")
    assert summary.gate_units == 64 and not any("gates" in n for n in summary.notes)
    data = page_data(tmp_path / "r.html")
    ids = model.tokenizer.encode(text).astype("int64")
    reading = trace(model.net, ids, int(model.tokenizer.encode("\n")[0]))
    gates = lstm_gates(model.net, reading)
    for block in data["blocks"]:
        kind = block["kind"][0]               # "h" or "c"; the page shows tanh(c)
        start = dequantise(_decoded(block, "start"))
        assert np.abs(start - shown(reading.start)[kind][block["layer"]]).max() <= 1 / 255
    names = {"input gate": "i", "forget gate": "f", "cell candidate": "g", "output gate": "o"}
    for block in data["gates"]:
        values = dequantise(_decoded(block)).reshape(64, len(text)).T       # [T, units]
        assert np.abs(values - gates[names[block["gate"]]][0]).max() <= 1 / 255
    # and the gates are the ones that wrote the state: c = f * c_before + i * g
    c_before = np.concatenate([[np.zeros(64)], reading.start["c"][0][None],
                               reading.states["c"][0][:-2]])
    c_after = np.concatenate([reading.start["c"][0][None], reading.states["c"][0][:-1]])
    assert np.abs(gates["f"][0] * c_before + gates["i"][0] * gates["g"][0] - c_after).max() < 1e-5
    with pytest.raises(ValueError, match="a gru has no LSTM gates"):
        gru = CharRNN(ModelConfig(vocab_size=10, cell="gru", layers=1, hidden_size=4,
                                  embed_size=2))
        lstm_gates(gru, trace(gru, np.array([1, 2, 3]), 1))


def test_a_gru_report_has_a_state_view_without_gates(model, tmp_path):
    torch.manual_seed(0)
    gru = CharRNN(ModelConfig(vocab_size=model.tokenizer.vocab_size, cell="gru", layers=2,
                              hidden_size=8, embed_size=4))
    summary = write_report(gru, model.tokenizer, "the king and the queen", tmp_path / "r.html")
    data = page_data(tmp_path / "r.html")
    assert summary.gate_units == 0 and data["gates"] == [] and data["kinds"] == ["hidden"]
    assert [len(_decoded(b, "start")) for b in data["blocks"]] == [8, 8]
    assert "forget gate" not in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_the_page_stays_under_10_mb_at_the_stated_limits(model, trained, tmp_path):
    """Size = fixed part + per character + the stored activations; measured at two lengths,
    extrapolated to the 10,000-character limit with the full activation budget."""
    text = (trained.parent / "corpus.txt").read_text(encoding="utf-8")
    sizes = []
    for chars in (1000, 2000):
        summary = model.report(text, tmp_path / "r.html", max_chars=chars)
        data = page_data(tmp_path / "r.html")
        codes = sum(len(b["codes"]) + len(b["start"]) for b in data["blocks"]) + \
            sum(len(b["codes"]) for b in data["gates"])         # states, start states, gates
        sizes.append(summary.size - codes)
    per_char = (sizes[1] - sizes[0]) / 1000
    worst = sizes[0] + per_char * (10_000 - 1000) + MAX_VALUES * 4 / 3
    assert worst < MAX_BYTES, (per_char, worst)


def test_a_short_text_has_a_shorter_curve_with_a_note(model, tmp_path):
    summary = model.report("to be or", tmp_path / "r.html", gradient_steps=50)
    assert len(summary.curve) == 6
    assert "the gradient curve reaches k = 6, not 50" in summary.notes[-1]
    summary = model.report("to", tmp_path / "r.html")
    assert len(summary.curve) == 0 and "too short for the gradient curve" in summary.notes[-1]
    assert summary.hits == [] and "no list of correlated units: over 2 characters" in \
        summary.notes[0]


def test_layers_units_and_states_that_do_not_exist_are_refused(model, tmp_path):
    with pytest.raises(OptionError, match="layer is 1, but the model has 1 layer: give 0$"):
        model.report("the king", tmp_path / "r.html", layer=1)
    with pytest.raises(OptionError, match="unit is 64, but each layer has 64 units"):
        model.report("the king", tmp_path / "r.html", unit=64)
    gru = CharRNN(ModelConfig(vocab_size=model.tokenizer.vocab_size, cell="gru", layers=1,
                              hidden_size=8, embed_size=4))
    with pytest.raises(OptionError, match="state is cell, but a gru has no cell state"):
        write_report(gru, model.tokenizer, "the king", tmp_path / "r.html",
                     ReportConfig(state="cell"))
    unknown = "unknown report option 'units' .did you mean 'unit'.?.: use max_chars, "
    with pytest.raises(CharRNNError, match=unknown):
        model.report("the king", tmp_path / "r.html", units=3)
    assert not (tmp_path / "r.html").exists()


def test_empty_unreadable_and_unwritable(model, tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(CharRNNError, match="empty.txt is empty: give it some text"):
        model.report_file(str(tmp_path / "empty.txt"), tmp_path / "r.html")
    with pytest.raises(CharRNNError, match="does not exist"):
        model.report_file(str(tmp_path / "missing.txt"), tmp_path / "r.html")
    (tmp_path / "latin.txt").write_bytes("the king caf\xe9".encode("latin-1"))
    with pytest.raises(CharRNNError, match="not valid utf-8 at byte 12"):
        model.report_file(str(tmp_path / "latin.txt"), tmp_path / "r.html")
    summary = model.report_file(str(tmp_path / "latin.txt"), tmp_path / "r.html",
                                encoding="latin-1")
    assert summary.chars == 13 and not any("vocabulary" in n for n in summary.notes)  # é is in it
    (tmp_path / "file").write_text("x")
    with pytest.raises(CharRNNError, match="cannot write the report .*choose another --out"):
        model.report("the king", tmp_path / "file" / "r.html")


def test_the_command_writes_the_report_and_lists_the_units(trained, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["viz", str(trained), str(trained.parent / "corpus.txt"),
                                       "--out", str(out), "--max-chars", "500"])
    assert result.exit_code == 0, result.output
    assert out.exists() and f"wrote {out}" in result.output
    assert re.search(r"layer 0 (cell|hidden) +unit \d+ +r = [+-]0\.\d\d", result.output)


@pytest.mark.parametrize("args, message", [
    (["--layer", "3"], "error: --layer is 3, but the model has 1 layer: give 0"),
    (["--unit", "64"], "error: --unit is 64, but each layer has 64 units: give 0 to 63"),
    (["--max-chars", "20000"], "error: --max-chars must be in [2, 10000]"),
])
def test_the_command_names_the_bad_option_in_one_line(trained, tmp_path, args, message):
    result = CliRunner().invoke(main, ["viz", str(trained), str(trained.parent / "corpus.txt"),
                                       "--out", str(tmp_path / "r.html"), *args])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [message + result.output.strip()[len(message):]]
    assert result.output.startswith(message)


@pytest.fixture(scope="module")
def rnn_run(trained, tmp_path_factory):
    """A tiny tanh RNN trained like the shared ``trained`` LSTM (40 steps on its corpus)."""
    config = tiny_config(tmp_path_factory.mktemp("rnn") / "run", steps=40)
    config.model.cell = "rnn"
    charrnn.train(str(trained.parent / "corpus.txt"), config)
    return Path(config.out)


def _polylines(page: str) -> list:
    """(label, [(x, y)]) of each curve of the page's gradient chart, in drawing order."""
    svg = re.search(r'<svg id="curves".*?</svg>', page, re.S).group(0)
    return [(html.unescape(title), [tuple(map(float, p.split(","))) for p in points.split()])
            for points, title in re.findall(r'<polyline points="([^"]*)"[^>]*><title>(.*?)'
                                            r'</title>', svg)]


def test_compared_models_share_one_axis_and_the_rnn_forgets_faster(model, trained, rnn_run,
                                                                    tmp_path):
    text = (trained.parent / "corpus.txt").read_text(encoding="utf-8")[:600]
    summary = model.report(text, tmp_path / "r.html", compare=[rnn_run])
    (label, rnn_curve), = summary.compared
    assert label == f"{rnn_run} (rnn 1x64)" and summary.label == "run (lstm 1x64)"
    # the compared curve is the probe's, on the same text
    rnn = charrnn.load(rnn_run, device="cpu")
    ids = rnn.tokenizer.encode(text).astype("int64")
    states = trace(rnn.net, ids, int(rnn.tokenizer.encode("\n")[0])).states
    assert rnn_curve == pytest.approx(gradient_curve(rnn.net, ids, states, 50, 32), rel=1e-5)
    # drawn on one axis: the same pixels per power of ten for both curves
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    lines = dict(_polylines(page))
    assert list(lines) == [label, summary.label]         # this model's drawn last, on top
    scales = [(points[0][1] - points[-1][1]) / math.log10(fall(curve)) for points, curve in
              ((lines[label], rnn_curve), (lines[summary.label], summary.curve))]
    assert scales[0] == pytest.approx(scales[1], rel=0.01)
    low, high = curve_axis([summary.curve, rnn_curve])
    assert f"1e{low} to 1e{high}" in page
    assert math.log10(fall(rnn_curve)) > math.log10(fall(summary.curve)) + 3   # measured: 6
    assert "The curves share one axis" in page


def test_one_report_alone_spans_at_least_ten_powers_of_ten(model, tmp_path):
    assert curve_axis([[0.5, 0.4, 0.3]]) == (-MIN_DECADES, 0)        # a flat curve looks flat
    assert curve_axis([[20.0, 1e-13]]) == (-13, 2)                   # a steep one fits
    summary = model.report("to be or not to be, the king\n" * 3, tmp_path / "r.html")
    low, high = curve_axis([summary.curve])
    assert high - low >= MIN_DECADES
    assert f"1e{low} to 1e{high}" in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(_polylines((tmp_path / "r.html").read_text(encoding="utf-8"))) == 1


def test_viz_compare_prints_both_falls_and_refuses_a_missing_model(trained, rnn_run, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["viz", str(trained), str(trained.parent / "corpus.txt"),
                                       "--out", str(out), "--max-chars", "300",
                                       "--compare", str(rnn_run), "--compare", str(rnn_run)])
    assert result.exit_code == 0, result.output
    falls = re.findall(r"^  (\S+) +(.*)$", result.output.split("falls by a factor of:")[1], re.M)
    assert [label for _, label in falls] == ["run (lstm 1x64)", f"{rnn_run} (rnn 1x64)",
                                             f"{rnn_run} (rnn 1x64)"]
    assert float(falls[1][0]) > float(falls[0][0])
    assert len(_polylines(out.read_text(encoding="utf-8"))) == 3
    result = CliRunner().invoke(main, ["viz", str(trained), str(trained.parent / "corpus.txt"),
                                       "--out", str(tmp_path / "x.html"),
                                       "--compare", str(tmp_path / "missing")])
    assert result.exit_code == 1 and not (tmp_path / "x.html").exists()
    one_line_error(result, f"error: checkpoint {tmp_path / 'missing'} does not exist")
    with pytest.raises(CharRNNError, match="compare takes run or checkpoint folders or Model "
                                           "objects, not int"):
        charrnn.load(trained, device="cpu").report("the king", tmp_path / "x.html", compare=[3])
