"""The benchmark harness's pure parts: the plain-loop pick, the resumable state file, the
RESULTS.md sections and the corpus builders (on tiny inputs; no training here)."""
import json
import struct

import pytest
import torch

from bench import baseline, corpora, markers
from bench.state import State, best_plain, sweep_key


def _cell(loss):
    return {"figures": {"val_loss": loss}, "date": "2026-11-29 12:00"}


def test_best_plain_is_the_lowest_loss_of_the_whole_sweep():
    cells = {sweep_key("tinyshakespeare", 60, c): _cell(2.0 + i / 10)
             for i, c in enumerate(baseline.SWEEP)}
    winner = baseline.SWEEP[5]
    cells[sweep_key("tinyshakespeare", 60, winner)] = _cell(1.5)
    config, why = best_plain(cells, 60)
    assert config == winner
    assert why == "best of the sweep at 60 s (1.500)"


def test_best_plain_keeps_the_stated_default_until_the_sweep_is_complete():
    cells = {sweep_key("tinyshakespeare", 600, c): _cell(1.0) for c in baseline.SWEEP[:-1]}
    assert best_plain(cells, 600)[0] == dict(cell="lstm", hidden=512, batch=64)
    assert best_plain({}, 60)[0] == dict(cell="rnn", hidden=256, batch=32)
    assert "7 of 8" in best_plain(cells, 600)[1]


def test_the_sweep_is_cell_by_width_by_batch():
    names = {baseline.config_name(c) for c in baseline.SWEEP}
    assert names == {f"{cell}-2x{width}-b{batch}" for cell in ("rnn", "lstm")
                     for width in (256, 512) for batch in (32, 64)}


def test_state_skips_finished_cells_unless_redone_and_survives_a_reload(tmp_path):
    path = tmp_path / "state.json"
    state = State(path)
    assert not state.done("sweep/x/60/a")
    state.record("sweep/x/60/a", {"val_loss": 1.7}, {"cpu": "test"}, "python -m bench.section")
    again = State(path)
    assert again.done("sweep/x/60/a")
    assert not again.done("sweep/x/60/a", redo="sweep/")
    assert again.done("sweep/x/60/a", redo="grid/")
    assert again.val("sweep/x/60/a") == 1.7
    assert json.loads(path.read_text())["cells"]["sweep/x/60/a"]["cpu"] == "test"
    assert not list(tmp_path.glob("*.tmp"))


def test_held_out_is_charrnns_validation_split():
    from charrnn.data.batches import split_train_val
    import numpy as np
    for length in (10, 99, 1001, 1234567):
        text = "ab" * (length // 2) + "c" * (length % 2)
        ids = np.arange(length)
        assert len(baseline.held_out(text)) == len(split_train_val(ids, 0.1)[1])
    assert baseline.held_out("x" * 1000, most=7) == "x" * 7


def test_markers_replace_only_their_own_section_and_append_tried(tmp_path):
    tried = tmp_path / "TRIED.md"
    tried.write_text("## What was tried\n\nnotes\n")
    text = markers.with_tried(markers.put("# Benchmark results\n", "a", "first A"), tried)
    text = markers.put(text, "b", "first B")
    text = markers.with_tried(markers.put(text, "a", "second A", first=True), tried)
    assert "second A" in text and "first A" not in text and "first B" in text
    assert text.count("## What was tried") == 1 and text.rstrip().endswith(markers.TRIED_END)
    assert text.index("second A") < text.index("first B") < text.index("## What was tried")


def _mo(strings):
    """A little-endian GNU .mo catalog with an empty header and ``strings`` translated."""
    originals = [b""] + [f"m{i}".encode() for i in range(len(strings))]
    translations = [b"header"] + [s.encode() for s in strings]
    count, table = len(originals), 28
    data_at = table + 16 * count
    blob, offsets = b"", []
    for item in originals + translations:
        offsets.append((len(item), data_at + len(blob)))
        blob += item + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, count, table, table + 8 * count, 0, 0)
    return head + b"".join(struct.pack("<2I", *o) for o in offsets) + blob


def test_messages_keeps_each_accepted_string_once_up_to_the_cap(tmp_path):
    path = tmp_path / "a.mo"
    path.write_bytes(_mo(["Привет,   мир", "hello", "Привет, мир", "Ещё строка"]))
    text = corpora.messages([path], lambda t: bool(corpora.CYRILLIC.search(t)), 10_000)
    assert text == "Привет, мир\nЕщё строка\n"
    assert corpora.messages([path], lambda t: True, 12) == "Привет, мир\n"


def test_source_files_are_sorted_headed_and_cut_at_a_file_boundary(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.py").write_text("z = 1\n")
    (tmp_path / "a.py").write_text("a = 1\n")
    (tmp_path / "c.txt").write_text("not python\n")
    text = corpora.source_files(tmp_path, 10_000)
    assert text == "# file: a.py\na = 1\n\n# file: b/z.py\nz = 1\n\n"
    assert corpora.source_files(tmp_path, 25) == "# file: a.py\na = 1\n\n"


@pytest.mark.parametrize("chars, expected", [(1_000_000, 0), (20_000_000, 0),
                                             (20_000_001, corpora.LARGE_VAL_CHARS)])
def test_large_corpora_are_evaluated_on_a_stated_prefix(chars, expected):
    assert corpora.val_chars_for(chars) == expected


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_the_plain_loop_trains_either_cell_and_evaluates_the_held_out_text(cell):
    text = "the cat sat on the mat. " * 200
    loss, steps, rate, model = baseline.train(text, 60, hidden=16, embed=8, batch=4, seq=16,
                                              max_steps=5, cell=cell, return_model=True)
    assert steps == 5 and rate > 0
    assert isinstance(model.rnn, {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM}[cell])
    ids, chars = baseline.encode(text)
    assert chars == sorted(set(text)) and "".join(chars[i] for i in ids[:24]) == text[:24]
    held = ids[len(ids) - len(baseline.held_out(text)):]
    assert loss == baseline.evaluate(model, held)


def _machine_cell(figures, date="2026-11-29 12:00", cpu="CPU X"):
    return {"figures": figures, "date": date, "cpu": cpu, "features": "AVX512", "cores": 2,
            "torch": "2.13.0", "command": "python -m bench.section ..."}


def test_the_medians_table_reports_the_gap_against_its_goal(tmp_path):
    from bench.report import Machines, medians_table
    state = State(tmp_path / "state.json")
    plain = baseline.config_name(baseline.default_pick(600))
    for seed, ours, theirs in ((1, 1.40, 1.50), (2, 1.30, 1.45), (3, 1.45, 1.47)):
        state.cells[f"median/tinyshakespeare/600/charrnn/seed{seed}"] = _machine_cell(
            {"val_loss": ours, "settings": "lstm 1x768"})
        state.cells[f"median/tinyshakespeare/600/{plain}/seed{seed}"] = _machine_cell(
            {"val_loss": theirs}, cpu="CPU Y")
    machines = Machines()
    text = "\n".join(medians_table(state, 600.0, (1, 2, 3), machines))
    assert "| charrnn defaults | 1.400 | 1.300 | 1.450 | 1.400 |" in text
    assert f"| plain {plain} | 1.500 | 1.450 | 1.470 | 1.470 |" in text
    assert "Gap (plain median - charrnn median): 0.070 nats/char; goal >= 0.08: NOT met." in text
    assert machines.legend() == ("- A: CPU X (AVX512), 2 cores, torch 2.13.0\n"
                                 "- B: CPU Y (AVX512), 2 cores, torch 2.13.0")


def test_the_fine_tuning_table_shows_each_pair_and_its_ratio():
    from bench.report import finetune_section
    figures = {"base_steps": 900, "base_val_loss": 1.58, "new_corpus": "German messages",
               "new_corpus_chars": 1_330_526, "added_chars": "äöü", "lr_scale": 0.5,
               "finetune_same_steps_val_loss": 1.35, "scratch_same_steps_val_loss": 1.35 * 1.1,
               "finetune_steps": 1000, "scratch_steps": 990, "finetune_val_loss": 1.3,
               "scratch_val_loss": 1.3 * 1.2, "old_val_before": 1.58, "old_val_after": 3.2}
    text = finetune_section(_machine_cell(figures))
    assert "| val loss on the new text, 900 steps each (nats/char) | 1.350 | 1.485 | 1.10x |" \
        in text
    assert "(1000 / 990 steps) | 1.300 | 1.560 | 1.20x |" in text
    assert "3 characters added" in text


def test_the_chinese_corpus_keeps_messages_with_ideographs(tmp_path, monkeypatch):
    folder = tmp_path / "zh_CN" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "a.mo").write_bytes(_mo(["无法取得有效的上下文。", "only latin here", "短"]))
    monkeypatch.setattr(corpora, "LOCALES", tmp_path)
    text, why = corpora.build_chinese()
    assert text is None and why.startswith("skipped:")           # far under 300,000
    kept = corpora.messages([folder / "a.mo"], lambda t: len(t) >= 8 and
                            bool(corpora.HAN.search(t)), 10_000)
    assert kept == "无法取得有效的上下文。\n"


def test_sampling_other_cells_reports_each_beside_the_lstm(monkeypatch):
    import bench.__main__ as harness
    seen = []

    def fake(name, batch, length, cell, *shape):
        seen.append((name, batch, cell))
        return {"chars_per_sec": {"lstm": 200.0, "mingru": 100.0, "minlstm": 50.0}[cell] * batch}
    monkeypatch.setattr(harness, "run_section", fake)
    figures = {"sample": {f"b{b}": {"fp32": {"chars_per_sec": 400.0 * b}} for b in (1, 64)}}
    rows = harness.cell_rows(figures, {"length": 10}, "cpu")
    assert [s[1:] for s in seen] == [(b, c[0]) for b in (1, 64) for c in harness.CELLS_SAMPLED]
    ratios = {row[0].split(", ")[1] + row[0].split(", ")[2]: row[3] for row in rows}
    assert ratios["mingru 4x128batch 64"] == pytest.approx(0.25)
    assert ratios["lstm 1x512batch 1"] == pytest.approx(0.5)


def test_sample_cell_measures_a_min_cell_through_the_engine():
    from bench.sampling_bench import sample_cell
    figures = sample_cell(2, 40, "mingru", 1, 16, 1, 2)
    assert figures["chars_per_sec"] > 0 and figures["params"] > 0
    assert figures["flops_per_char"] > 2 * 16 * 16      # at least the block's products


def test_the_min_cells_run_at_the_short_budget_beside_the_defaults(monkeypatch):
    import bench.__main__ as harness
    calls = []

    def fake(name, corpus, seconds, seed, cell, *rest):
        calls.append((name, seconds, seed, cell, rest[-1]))
        return {"val_loss": {"mingru": 1.6, "minlstm": 1.7}[cell]}
    monkeypatch.setattr(harness, "run_section", fake)
    figures = {"quality_short": {"charrnn": [{"val_loss": 1.4}, {"val_loss": 1.5}]}}
    rows = harness.min_cell_rows(figures, "c.txt", {"short": 60}, "cpu")
    lr = harness.mincell.LR
    assert calls == [("quality_min", 60, 1, "mingru", lr), ("quality_min", 60, 1, "minlstm", lr)]
    assert [(r[1], r[2]) for r in rows] == [(1.6, 1.4), (1.7, 1.4)]
    assert figures["quality_min"]["mingru 4x128"]["val_loss"] == 1.6


@pytest.mark.parametrize("cell", ["mingru", "lstm"])
def test_step_ms_times_training_steps_after_the_first_three(cell):
    from bench.mincell import step_ms
    figures = step_ms(cell, 1, 16, 1, 2, 0, steps=5, batch=2, seq=8)
    assert figures["ms_per_step"] > 0 and figures["first_3_steps_s"] > 0
    assert figures["chars_per_sec"] == pytest.approx(16 / figures["ms_per_step"] * 1e3)
    assert figures["compiled"] is False
