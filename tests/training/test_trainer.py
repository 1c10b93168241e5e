import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import charrnn
from charrnn import CharRNNError
from charrnn.api import train_run
from conftest import make_corpus, tiny_config


def weights(folder):
    return load_file(folder / "model.safetensors")


def test_training_lowers_validation_loss_and_reports_bpc(corpus, tmp_path):
    result = train_run(str(corpus), tiny_config(tmp_path / "run", steps=60, eval_interval=20))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40, 60]
    assert records[-1]["val_loss"] < records[0]["val_loss"] < math.log(30)
    assert result.val_bpc == pytest.approx(result.val_loss / math.log(2))
    assert result.stopped_by == "steps"
    assert result.reached_limit and result.stop_reason == "the step limit"


def test_a_signal_or_the_callback_is_no_limit_and_a_signal_names_itself():
    from charrnn.training.trainer import TrainResult
    def stopped(by):
        return TrainResult(out=".", step=1, val_loss=math.nan, val_bpc=math.nan,
                           best_val_loss=math.inf, elapsed=1.0, stopped_by=by)
    assert stopped("early-stop").reached_limit
    assert stopped("early-stop").stop_reason == "early stopping"
    assert not stopped("callback").reached_limit and not stopped("SIGTERM").reached_limit
    assert stopped("SIGTERM").stop_reason == "SIGTERM" and stopped("SIGTERM").interrupted


def test_same_seed_gives_the_same_weights(corpus, tmp_path):
    train_run(str(corpus), tiny_config(tmp_path / "a", steps=15))
    train_run(str(corpus), tiny_config(tmp_path / "b", steps=15))
    a, b = weights(tmp_path / "a" / "last"), weights(tmp_path / "b" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)


# The regularised run crosses epochs (a short text) with every training option of #12 on.
REGULARISED = dict(ema=0.9, epoch_offset=True, schedule="wsd", head_bias="unigram",
                   model=dict(weight_drop=0.3, locked_dropout=True, input_dropout=0.2))


@pytest.mark.parametrize("options", [{}, REGULARISED], ids=["plain", "regularised"])
def test_interrupted_then_resumed_equals_uninterrupted(options, corpus, tmp_path):
    config = dict(steps=24, eval_interval=8, model=charrnn.preset("tiny").model)
    config["model"].dropout = 0.1  # dropout needs the RNG state restored, too
    config["model"].layers = 2
    if options:
        make_corpus(corpus, chars=3000)
        config.update({k: v for k, v in options.items() if k != "model"})
        config["model"] = dataclasses.replace(config["model"], **options["model"])
    train_run(str(corpus), tiny_config(tmp_path / "straight", **config))
    stopped = train_run(str(corpus), tiny_config(tmp_path / "split", **config),
                        callback=lambda step, metrics: step == 11)
    assert stopped.stopped_by == "callback" and stopped.step == 11
    train_run(str(corpus), tiny_config(tmp_path / "split", resume=True, **config))
    a, b = weights(tmp_path / "straight" / "last"), weights(tmp_path / "split" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = [torch.load(tmp_path / run / "last" / "trainer_state.pt", weights_only=True)
            for run in ("straight", "split")]
    assert a.keys() == b.keys() and ("ema" in a) == ("ema" in options)
    for name in ("weights", "ema"):          # --ema: the raw weights and the average
        assert all(torch.equal(a[name][k], b[name][k]) for k in a.get(name, {}))
    metrics = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("straight", "split")]
    strip = lambda lines: [{k: v for k, v in json.loads(l).items() if k not in ("elapsed", "chars_per_sec")}
                           for l in lines]
    assert strip(metrics[0]) == strip(metrics[1])


def test_time_limit_stops_training(corpus, tmp_path):
    result = train_run(str(corpus), tiny_config(tmp_path / "run", steps=None, time_limit=1.5))
    assert result.stopped_by == "time" and 1.5 <= result.elapsed < 10


def test_epochs_limit(corpus, tmp_path):
    config = tiny_config(tmp_path / "run", steps=None, epochs=1)
    result = train_run(str(corpus), config)
    chars = len(corpus.read_text(encoding="utf-8"))
    train_chars = chars - int(chars * 0.1)
    assert result.stopped_by == "epochs" and result.step == (train_chars - 1) // 8 // 32


def test_refuses_to_write_over_another_model(corpus, tmp_path):
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=5))
    before = weights(tmp_path / "run" / "last")
    with pytest.raises(CharRNNError, match="already holds a model"):
        train_run(str(corpus), tiny_config(tmp_path / "run", steps=5))
    after = weights(tmp_path / "run" / "last")
    assert all(torch.equal(before[k], after[k]) for k in before)
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=6, overwrite=True))
    assert json.loads((tmp_path / "run" / "last" / "config.json").read_text())["metrics"]["step"] == 6


def test_token_cache_is_reused(corpus, tmp_path):
    train_run(str(corpus), tiny_config(tmp_path / "a", steps=2))
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    train_run(str(corpus), tiny_config(tmp_path / "b", steps=2))
    assert list((tmp_path / "cache").iterdir()) == cached and cached[0].stat().st_mtime_ns == stamp


def test_no_cuda_is_a_clear_error(corpus, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CharRNNError, match="no CUDA device"):
        train_run(str(corpus), tiny_config(tmp_path / "run", device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_checkpoint_loads_on_cpu(corpus, tmp_path):
    train_run(str(corpus), tiny_config(tmp_path / "run", device="cuda", steps=10))
    model = charrnn.load(tmp_path / "run", device="cpu")
    assert model.device.type == "cpu" and len(model.generate("the", length=10, seed=1)) == 13


def test_resume_on_a_finished_run_says_so_and_changes_nothing(corpus, tmp_path):
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=12))
    before = weights(tmp_path / "run" / "last")
    with pytest.raises(CharRNNError, match=r"already reached its limit \(12 steps; .*pass a "
                                           r"larger --steps, --epochs or --time-limit"):
        train_run(str(corpus), tiny_config(tmp_path / "run", steps=12, resume=True))
    after = weights(tmp_path / "run" / "last")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_head_bias_unigram_starts_a_new_model_at_the_training_texts_frequencies(corpus, tmp_path):
    options = dict(steps=1, eval_interval=1, lr=1e-12)
    train_run(str(corpus), tiny_config(tmp_path / "plain", **options))
    train_run(str(corpus), tiny_config(tmp_path / "unigram", head_bias="unigram", **options))
    plain, unigram = weights(tmp_path / "plain" / "last"), weights(tmp_path / "unigram" / "last")
    for name in plain.keys() - {"head.bias"}:     # the rest as a default run's (lr ~ 0)
        torch.testing.assert_close(plain[name], unigram[name], rtol=0, atol=1e-9)
    model = charrnn.load(tmp_path / "unigram")
    text = corpus.read_text(encoding="utf-8")
    train = model.tokenizer.encode(text[:len(text) - int(len(text) * 0.1)])
    counts = np.bincount(train, minlength=model.tokenizer.vocab_size) + 1.0
    expected = torch.from_numpy(np.log(counts / counts.sum())).float()
    torch.testing.assert_close(unigram["head.bias"], expected, rtol=0, atol=1e-6)
