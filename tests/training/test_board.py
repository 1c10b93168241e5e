"""--tensorboard: the run's records and samples as TensorBoard events in OUT/tensorboard/, read
back with TensorBoard's own reader; a resume drops the events after its step, --overwrite the
old files. (Only the first process writes under torchrun: tests/training/test_distributed.py.)"""
import json
import math
import shutil

import pytest
from click.testing import CliRunner

from charrnn.api import train_run
from charrnn.cli.commands import main
from conftest import tiny_config

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

# The record's field behind each scalar tag (bpc/train: train_loss in bits).
FIELDS = {"loss/train": "train_loss", "loss/validation": "val_loss", "bpc/validation": "val_bpc",
          "learning_rate": "lr", "grad_norm/mean": "grad_norm_mean",
          "grad_norm/max": "grad_norm_max", "speed/chars_per_sec": "chars_per_sec"}


def events(run, purge=True):
    """TensorBoard's reader over RUN/tensorboard, with no size limit (0) on any kind of event
    (by default it keeps a sample of 10 tensor events, such as texts)."""
    reader = event_accumulator.EventAccumulator(
        str(run / "tensorboard"), size_guidance={kind: 0 for kind in (
            event_accumulator.SCALARS, event_accumulator.TENSORS)},
        purge_orphaned_data=purge)
    return reader.Reload()


def scalars(reader, tag):
    return [(event.step, event.value) for event in reader.Scalars(tag)]


def records(run, name="metrics.jsonl"):
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


def test_the_events_are_the_records_and_the_samples(corpus, tmp_path):
    run = tmp_path / "run"
    train_run(str(corpus), tiny_config(run, steps=24, eval_interval=2, sample_every=2,
                                       tensorboard=True))
    reader, written = events(run), records(run)
    assert len(written) == 12                        # more than the reader's default 10 texts
    assert set(reader.Tags()["scalars"]) == {*FIELDS, "bpc/train"}
    for tag, field in FIELDS.items():
        assert scalars(reader, tag) == [(r["step"], pytest.approx(r[field], rel=1e-6))
                                        for r in written], tag
    assert scalars(reader, "bpc/train") == [
        (r["step"], pytest.approx(r["train_loss"] / math.log(2), rel=1e-6)) for r in written]
    texts = [(event.step, event.tensor_proto.string_val[0].decode())
             for event in reader.Tensors("sample/text_summary")]
    samples = records(run, "samples.jsonl")
    assert [step for step, _ in texts] == [s["step"] for s in samples] == list(range(2, 25, 2))
    assert [text.replace("\n    ", "\n")[4:] for _, text in texts] == [s["text"] for s in samples]
    assert all(text.startswith("    ") for _, text in texts)    # a Markdown code block


def test_resume_drops_the_events_after_its_step(corpus, tmp_path):
    config = dict(steps=24, eval_interval=8, tensorboard=True)
    train_run(str(corpus), tiny_config(tmp_path / "straight", **config))
    split = tmp_path / "split"
    train_run(str(corpus), tiny_config(split, **config), callback=lambda step, _: step == 11)
    shutil.copytree(split / "last", tmp_path / "last-at-11")
    # A session that logged steps 16 and 24 and was then killed before its `last` was saved.
    train_run(str(corpus), tiny_config(split, resume=True, **config))
    shutil.rmtree(split / "last")
    shutil.copytree(tmp_path / "last-at-11", split / "last")
    train_run(str(corpus), tiny_config(split, resume=True, **config))

    assert len(list((split / "tensorboard").iterdir())) == 3       # one file per session
    unpurged = events(split, purge=False)
    assert [step for step, _ in scalars(unpurged, "loss/validation")] == [8, 16, 24, 16, 24]
    straight, resumed = events(tmp_path / "straight"), events(split)
    for tag in FIELDS:
        if tag != "speed/chars_per_sec":           # the exact resume: the same figures
            assert scalars(resumed, tag) == scalars(straight, tag), tag
    assert [step for step, _ in scalars(resumed, "speed/chars_per_sec")] == [8, 16, 24]


def test_overwrite_removes_the_old_events(corpus, tmp_path):
    run = tmp_path / "run"
    train_run(str(corpus), tiny_config(run, steps=20, eval_interval=10, tensorboard=True))
    train_run(str(corpus), tiny_config(run, steps=5, eval_interval=5, tensorboard=True,
                                       overwrite=True))
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert [step for step, _ in scalars(events(run), "loss/validation")] == [5]
    train_run(str(corpus), tiny_config(run, steps=5, overwrite=True))   # no --tensorboard now
    assert not (run / "tensorboard").exists()


def test_the_option_is_declared_once_and_saved_with_the_run(corpus, tmp_path):
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert "--tensorboard" in help_text
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(corpus), "--preset", "tiny", "--steps", "4",
                                       "--eval-interval", "4", "--out", str(run), "--cache-dir",
                                       str(tmp_path / "cache"), "--no-progress", "--tensorboard"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "last" / "config.json").read_text())
    assert saved["train"]["tensorboard"] is True
    assert [step for step, _ in scalars(events(run), "loss/train")] == [4]
    assert f"--- curves: tensorboard --logdir {run / 'tensorboard'}" in result.output


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_no_folder(corpus, tmp_path):
    def fail(step, _):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        train_run(str(corpus), tiny_config(tmp_path / "run", steps=20, eval_interval=10,
                                           tensorboard=True), callback=fail)
    assert not (tmp_path / "run").exists()
