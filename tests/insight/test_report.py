"""The HTML report (charrnn viz / Model.report): its figures, its limits and its bad input."""
import base64
import json
import math
import re

import pytest
import torch
from click.testing import CliRunner

import charrnn
from charrnn import CharRNN, CharRNNError, ModelConfig, OptionError
from charrnn.cli.commands import main
from charrnn.config import ReportConfig
from charrnn.insight.report import MAX_BYTES, MAX_VALUES, write_report


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


def test_stored_units_are_cut_to_the_budget_with_a_note(model, tmp_path):
    text = "to be or not to be, the king and the queen\n" * 4
    summary = write_report(model.net, model.tokenizer, text, tmp_path / "r.html",
                           ReportConfig(unit=40, state="hidden"), max_values=len(text) * 2 * 5)
    assert summary.units_kept == 10 and summary.units_total == 128
    assert any("5 of the 64 units of each layer and state are stored" in n for n in summary.notes)
    blocks = {(b["kind"], b["layer"]): b for b in page_data(tmp_path / "r.html")["blocks"]}
    assert 40 in blocks[("hidden", 0)]["units"]      # the one asked for is always kept
    assert len(base64.b64decode(blocks[("cell", 0)]["codes"])) == 5 * len(text)


def test_the_page_stays_under_10_mb_at_the_stated_limits(model, trained, tmp_path):
    """Size = fixed part + per character + the stored activations; measured at two lengths,
    extrapolated to the 10,000-character limit with the full activation budget."""
    text = (trained.parent / "corpus.txt").read_text(encoding="utf-8")
    sizes = []
    for chars in (1000, 2000):
        summary = model.report(text, tmp_path / "r.html", max_chars=chars)
        codes = sum(len(b["codes"]) for b in page_data(tmp_path / "r.html")["blocks"])
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
