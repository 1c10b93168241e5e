"""Running out of memory: a run too large for the machine ends in one line saying what to lower,
exit 1, and no half-made run folder; eval's memory does not grow with the text; validation
reads at most --val-chars; with --time-limit T a train command ends by T + max(10 s, 5%).

The sizes asked for are far beyond any machine (terabytes) or beyond an address-space limit
set on a subprocess: never near this machine's real memory."""
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import tracemalloc

import pytest
import torch

import charrnn
from charrnn import CharRNNError
from charrnn.training import memory
from charrnn.api import train_run
from charrnn.config import VAL_CHARS
from charrnn.training.deadline import AFTER_TRAINING, Deadline, slack
from conftest import cli, make_corpus, one_line_error, tiny_config

MAPPED_AT_START = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
TRAIN = ["--preset", "tiny", "--no-progress", "--sample-length", "0", "--steps", "2"]

# (flags, the same as model/train config changes, what to lower)
TOO_LARGE = {
    "a 1M-unit rnn layer": (["--cell", "rnn", "--embed-size", "1", "--hidden-size", "1048576"],
                            {"cell": "rnn", "embed_size": 1, "hidden_size": 1 << 20}, {},
                            "lower --hidden-size or --layers"),
    "64 layers of 65536": (["--layers", "64", "--hidden-size", "65536"],
                           {"layers": 64, "hidden_size": 65536}, {},
                           "lower --hidden-size or --layers"),
    "a 1M x 1M batch": (["--batch-size", "1048576", "--seq-len", "1048576"], {},
                        {"batch_size": 1 << 20, "seq_len": 1 << 20},
                        "lower --batch-size or --seq-len"),
    "a 65536 x 65536 batch of a 4096-unit gru": (
        ["--cell", "gru", "--hidden-size", "4096", "--batch-size", "65536", "--seq-len", "65536"],
        {"cell": "gru", "hidden_size": 4096}, {"batch_size": 65536, "seq_len": 65536},
        "lower --batch-size or --seq-len"),
}


@pytest.mark.parametrize("name", list(TOO_LARGE))
def test_a_run_too_large_is_refused_through_the_cli(corpus, tmp_path, name):
    flags, _, _, lower = TOO_LARGE[name]
    result = cli("train", corpus, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                 *TRAIN, *flags)
    line = one_line_error(result, "not enough memory for this run: it needs about")
    assert line.endswith(lower) and result.exit_code == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", list(TOO_LARGE))
def test_a_run_too_large_is_refused_through_the_api(corpus, tmp_path, name):
    _, model, train, lower = TOO_LARGE[name]
    config = tiny_config(tmp_path / "run", steps=2, **train)
    config.model = dataclasses.replace(config.model, **model)
    with pytest.raises(CharRNNError, match=f"not enough memory .* free: {lower}$"):
        train_run(str(corpus), config)
    assert not (tmp_path / "run").exists()


def test_resuming_with_a_batch_too_large_leaves_the_run_as_it_was(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = cli("train", trained.parent / "corpus.txt", "--out", run, "--resume",
                 "--cache-dir", tmp_path / "cache", "--no-progress", "--steps", "100",
                 "--batch-size", "1048576", "--seq-len", "65536")
    one_line_error(result, "lower --batch-size or --seq-len")
    config = tiny_config(run, steps=100, resume=True, batch_size=1 << 20, seq_len=65536)
    with pytest.raises(CharRNNError, match="not enough memory"):
        train_run(str(trained.parent / "corpus.txt"), config)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before   # no .lock


def test_an_address_space_limit_is_the_memory_available(corpus, tmp_path):
    # The subprocess may map what this process mapped when the tests were collected (torch,
    # charrnn) and 2 GB more; the model needs about 17 GB (2 LSTM layers of 8192 units, AdamW).
    limit = MAPPED_AT_START + (2 << 30)

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out",
                           str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), *TRAIN,
                           "--hidden-size", "8192", "--layers", "2"], preexec_fn=limited,
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: not enough memory for this run") and \
        done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture
def allocator_fails():
    """The allocator fails on the 3rd training step, as CUDA's does when memory runs out (a
    global forward pre-hook: torch's public hook API)."""
    steps = []

    def hook(module, args):
        if isinstance(module, charrnn.CharRNN) and module.training:
            steps.append(1)
            if len(steps) == 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4 GiB")

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    yield steps
    handle.remove()


def test_an_allocator_failure_is_one_line_and_leaves_no_folder(corpus, tmp_path,
                                                               allocator_fails):
    with pytest.raises(CharRNNError, match="^out of memory: .*: lower --batch-size, --seq-len"):
        train_run(str(corpus), tiny_config(tmp_path / "run", steps=20))
    assert not (tmp_path / "run").exists()
    allocator_fails.clear()
    one_line_error(cli("train", corpus, "--out", tmp_path / "run", *TRAIN[:-1], "20",
                       "--eval-interval", "10",
                       "--cache-dir", tmp_path / "cache"), "out of memory")
    assert not (tmp_path / "run").exists()


def test_the_estimate_counts_the_parameters_torch_makes():
    for cell in ("rnn", "gru", "lstm"):
        config = charrnn.ModelConfig(vocab_size=37, cell=cell, layers=3, hidden_size=24,
                                     embed_size=5)
        assert memory.num_params(config) == charrnn.CharRNN(config).num_params()


@pytest.mark.parametrize("how", ["api", "cli"])
def test_eval_memory_does_not_grow_with_the_text(trained, tmp_path, monkeypatch, how):
    # Blocks of 64 KB: a text of 3 blocks and one of 30 use the same memory. (Joined whole, as
    # before, the larger text's peak was about 5 bytes per character higher: 9 MB here.)
    monkeypatch.setattr("charrnn.data.corpus.BLOCK_BYTES", 1 << 16)
    text = (trained.parent / "corpus.txt").read_text(encoding="utf-8")
    peaks = []
    for copies in (10, 100):
        path = tmp_path / f"text{copies}.txt"
        path.write_text(text * copies, encoding="utf-8")
        tracemalloc.start()
        if how == "api":
            result = charrnn.load(trained).evaluate_file(str(path),
                                                         cache_dir=str(tmp_path / "cache"))
            assert result.num_chars == len(text) * copies
        else:
            result = cli("eval", trained, path, "--cache-dir", tmp_path / "cache")
            assert f"over {len(text) * copies} characters" in result.output, result.output
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] <= peaks[0] + (1 << 16), peaks      # within one block


def test_validation_reads_at_most_val_chars(corpus, tmp_path):
    config = tiny_config(tmp_path / "run", steps=10, eval_interval=10, val_chars=1000)
    result = train_run(str(corpus), config)
    text = corpus.read_text(encoding="utf-8")
    held_out = text[len(text) - int(len(text) * config.val_fraction):]
    model = charrnn.load(tmp_path / "run" / "last")
    assert result.val_loss == pytest.approx(model.evaluate(held_out[:1000], config.seq_len)[0],
                                            abs=1e-6)
    assert result.val_loss != pytest.approx(model.evaluate(held_out, config.seq_len)[0],
                                            abs=1e-6)
    help_text = " ".join(cli("train", "--help").output.split())
    assert "--val-chars INTEGER Validate on at most this many characters" in help_text
    assert f"(default {VAL_CHARS:,}: all of tinyshakespeare's;" in help_text
    assert charrnn.TrainConfig().val_chars is None and VAL_CHARS >= 111_540  # its split
    one_line_error(cli("train", corpus, "--out", tmp_path / "short", *TRAIN, "--val-chars", "20",
                       "--seq-len", "32", "--cache-dir", tmp_path / "cache"),
                   "--val-chars 20 is shorter than one chunk of --seq-len 32 plus one: raise "
                   "--val-chars")


def test_a_time_limit_leaves_time_for_the_final_validation():
    # T = 20 s (slack 10 s) for a command that started 26.5 s ago: it must end within 3.5 s,
    # less the 3 s kept for what the command does after training (AFTER_TRAINING). With a final validation
    # and save of 0.3 s, training may go on for 0.2 s more, then must stop.
    now = time.monotonic()
    assert AFTER_TRAINING == 3.0
    deadline = Deadline(20.0, 0.0, now - 26.5, final=0.3, speak=False)
    assert deadline.end == pytest.approx(now + 0.5)
    assert not deadline.hopeless and deadline.reason(19.0) is None
    time.sleep(0.25)
    assert deadline.reason(19.3) == "time" and not deadline.skips("time")
    # No time for it even without training: train to the limit, skip the final validation.
    hopeless = Deadline(20.0, 0.0, time.monotonic() - 26.5, final=0.6, speak=False)
    assert hopeless.hopeless and hopeless.reason(19.0) is None and hopeless.skips("time")
    assert not hopeless.skips("steps")
    assert Deadline(None).reason(1e9) is None
    assert slack(60) == 10 and slack(600) == 30 and slack(3600) == 180


def test_a_time_limited_command_ends_in_time_when_validation_is_slow(tmp_path):
    # A 1024-unit LSTM validating 120,000 characters takes far longer than the 10 s slack.
    corpus = make_corpus(tmp_path / "corpus.txt")
    corpus.write_text(corpus.read_text(encoding="utf-8") * 65, encoding="utf-8")  # 1.3 MB
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out",
                           str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                           "--preset", "tiny", "--hidden-size", "1024", "--no-progress",
                           "--time-limit", "2s", "--sample-length", "20"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert took < 2 + slack(2), (took, done.stderr)
    assert "stopped by the time limit" in done.stdout
    assert "note: the final validation is skipped: it would take about" in done.stderr
    saved = json.loads((tmp_path / "run" / "last" / "config.json").read_text())
    assert saved["metrics"]["elapsed"] >= 2.0
