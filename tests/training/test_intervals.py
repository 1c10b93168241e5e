"""What a run does besides training (charrnn/training/intervals.py, trainer.py): early stopping, samples
in samples.jsonl, snapshot checkpoints step-NNNNNN/, and the validation metrics passed to the
callback."""
import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import charrnn
from charrnn import CharRNNError
from charrnn.api import train_run
from charrnn.model.checkpoint import recover
from charrnn.cli.commands import main
from conftest import make_corpus, tiny_config


def records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def weights(folder):
    return load_file(folder / "model.safetensors")


def expected_early_stop(losses, patience):
    """The index of the evaluation after which --early-stop ``patience`` stops, or None."""
    best, since = float("inf"), 0
    for i, loss in enumerate(losses):
        since += 1
        if loss < best:
            best, since = loss, 0
        if since >= patience:
            return i
    return None


def test_early_stop_stops_after_n_evaluations_without_a_better_loss(tmp_path):
    # A small text and a high rate: the validation loss stops improving within 300 steps.
    text = make_corpus(tmp_path / "small.txt", chars=4_000)
    config = tiny_config(tmp_path / "run", steps=300, eval_interval=5, early_stop=3, lr=0.05)
    result = train_run(str(text), config)
    logged = records(tmp_path / "run" / "metrics.jsonl")
    stop = expected_early_stop([r["val_loss"] for r in logged], 3)
    assert stop == len(logged) - 1                       # it stopped at the first chance
    assert result.stopped_by == "early-stop" and result.step == logged[stop]["step"] < 300
    best = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["metrics"]
    assert best["val_loss"] == min(r["val_loss"] for r in logged)
    # --resume with the same patience has nothing to do; a larger one continues.
    with pytest.raises(CharRNNError, match="stopped early: 3 evaluations .* larger --early-stop"):
        train_run(str(text), tiny_config(tmp_path / "run", steps=300, eval_interval=5,
                                         early_stop=3, lr=0.05, resume=True))
    again = train_run(str(text), tiny_config(tmp_path / "run", steps=result.step + 5,
                                             eval_interval=5, early_stop=50, lr=0.05,
                                             resume=True))
    assert again.step == result.step + 5 and again.stopped_by == "steps"


def test_the_cli_says_it_stopped_early(tmp_path):
    text = make_corpus(tmp_path / "small.txt", chars=4_000)
    result = CliRunner().invoke(main, ["train", str(text), "--out", str(tmp_path / "run"),
                                       "--preset", "tiny", "--steps", "300", "--lr", "0.05",
                                       "--eval-interval", "5", "--early-stop", "2",
                                       "--no-progress", "--sample-length", "0",
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "stopped by early stopping (2 evaluations without a better validation loss)" \
        in result.output


def test_the_callback_receives_the_validation_metrics(corpus, tmp_path):
    seen = []
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=10, eval_interval=5),
              callback=lambda step, metrics: seen.append((step, dict(metrics))) and False)
    logged = records(tmp_path / "run" / "metrics.jsonl")
    at_evaluations = [metrics for step, metrics in seen if "val_loss" in metrics]
    assert [m["step"] for m in at_evaluations] == [5, 10]
    for metrics, record in zip(at_evaluations, logged):
        assert {k: metrics[k] for k in record} == record
    assert all(set(metrics) == {"loss"} for step, metrics in seen if step % 5)


def test_samples_are_written_at_their_steps_without_changing_the_run(corpus, tmp_path):
    train_run(str(corpus), tiny_config(tmp_path / "plain", steps=12, eval_interval=6))
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=12, eval_interval=6,
                                       sample_every=4))
    samples = records(tmp_path / "run" / "samples.jsonl")
    assert [s["step"] for s in samples] == [4, 8, 12]
    assert len({(s["prime"], s["seed"], s["temperature"]) for s in samples}) == 1
    assert all(s["text"].startswith(s["prime"]) and len(s["text"]) == len(s["prime"]) + 200
               for s in samples)
    assert [s["val_loss"] for s in samples] == [None, records(tmp_path / "run" / "metrics.jsonl")
                                                [0]["val_loss"], samples[2]["val_loss"]]
    # The same model, prime and seed give the same text: the last sample is the final model's.
    model = charrnn.load(tmp_path / "run" / "last")
    assert model.generate(samples[2]["prime"], length=200, temperature=0.8,
                          seed=samples[2]["seed"]) == samples[2]["text"]
    a, b = weights(tmp_path / "plain" / "last"), weights(tmp_path / "run" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)       # sampling drew no training randomness


def test_the_progress_log_and_info_show_the_sample(corpus, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(corpus), "--out", str(tmp_path / "run"),
                                  "--preset", "tiny", "--steps", "6", "--sample-every", "3",
                                  "--sample-length", "0", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    samples = records(tmp_path / "run" / "samples.jsonl")
    for sample in samples:
        assert f"step {sample['step']} sample: {sample['text'].splitlines()[0][:140]}" \
            in result.output
    info = runner.invoke(main, ["info", str(tmp_path / "run")])
    assert info.exit_code == 0
    assert info.output.rstrip("\n").endswith(
        f"last sample (step 6, prime {samples[-1]['prime']!r}, temperature 0.8):\n"
        f"{samples[-1]['text']}")


def test_snapshots_are_full_checkpoints_and_only_the_newest_are_kept(corpus, tmp_path):
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=12, eval_interval=6,
                                       save_every=3, keep=2))
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best", "last", "loss.png",
                                                      "metrics.jsonl", "step-000009",
                                                      "step-000012"]
    assert sorted(p.name for p in (run / "step-000009").iterdir()) == [
        "README.md", "config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"]
    a, b = weights(run / "step-000012"), weights(run / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((run / "step-000009" / "config.json").read_text())
    assert config["metrics"]["step"] == 9
    result = CliRunner().invoke(main, ["sample", str(run / "step-000009"), "--length", "20",
                                       "--seed", "1"])
    assert result.exit_code == 0 and len(result.output) == 21
    # Recovering the folder leaves snapshots alone, and puts back one whose save was cut short.
    os.rename(run / "step-000009", run / "step-000009-moved")
    shutil.copytree(run / "step-000009-moved", run / ".old-step-000009-999999999")
    recover(run)
    assert (run / "step-000009").is_dir() and (run / "step-000012").is_dir()


def test_overwrite_clears_snapshots_and_samples(corpus, tmp_path):
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=4, save_every=2,
                                       sample_every=2))
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=3, overwrite=True))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best", "last", "loss.png",
                                                                    "metrics.jsonl"]


def test_a_resumed_run_writes_the_same_samples_and_snapshots(corpus, tmp_path):
    options = dict(steps=12, eval_interval=4, sample_every=2, save_every=6)
    train_run(str(corpus), tiny_config(tmp_path / "straight", **options))
    train_run(str(corpus), tiny_config(tmp_path / "split", **options),
              callback=lambda step, metrics: step == 5)
    train_run(str(corpus), tiny_config(tmp_path / "split", resume=True, **options))
    for name in ("samples.jsonl",):
        assert records(tmp_path / "split" / name) == records(tmp_path / "straight" / name)
    for snapshot in ("step-000006", "step-000012"):
        a, b = weights(tmp_path / "straight" / snapshot), weights(tmp_path / "split" / snapshot)
        assert all(torch.equal(a[k], b[k]) for k in a)
