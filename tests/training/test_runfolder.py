"""Two runs, one folder: while a run trains into --out, another `charrnn train` into it (a new
run, --resume, --overwrite; through the CLI or the API) refuses in one line naming the running
process; a lock left by a killed run is recovered, not a permanent block."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from charrnn import CharRNNError
from charrnn.api import train_run
from conftest import cli, one_line_error, tiny_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def start_training(corpus, out, cache, *args):
    """A real `charrnn train` process; returns once it holds the folder's lock."""
    process = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(corpus), "--out",
                                str(out), "--cache-dir", str(cache), "--preset", "tiny",
                                "--no-progress", "--sample-length", "0", *args],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "last").exists():       # locked, and a checkpoint saved (step 50)
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the first run never started"
        time.sleep(0.05)
    return process


def saved_step(out) -> int:
    return json.loads((out / "last" / "config.json").read_text())["metrics"]["step"]


# The second run: (CLI arguments after CORPUS --out OUT, the API's config changes)
SECOND = {
    "a new run": (["--steps", "5"], {"steps": 5}),
    "--resume": (["--resume", "--steps", "5000"], {"steps": 5000, "resume": True}),
    "--overwrite": (["--overwrite", "--steps", "5"], {"steps": 5, "overwrite": True}),
    "a fine-tune with other settings": (["--resume", "--lr", "1e-4", "--steps", "5000"],
                                        {"steps": 5000, "resume": True, "lr": 1e-4}),
}


def test_a_second_run_into_a_folder_in_use_is_refused(trained, tmp_path):
    corpus, out, cache = trained.parent / "corpus.txt", tmp_path / "run", tmp_path / "cache"
    first = start_training(corpus, out, cache, "--time-limit", "120s")
    try:
        expected = f"{out} is in use by another charrnn run (process {first.pid}): wait for it " \
                   "to end or stop it, or choose another --out"
        for name, (args, changes) in SECOND.items():
            before = sorted(os.listdir(out))
            one_line_error(cli("train", corpus, "--out", out, "--cache-dir", cache,
                               "--preset", "tiny", "--no-progress", *args), expected)
            with pytest.raises(CharRNNError, match=f"^{re.escape(expected)}$"):
                train_run(str(corpus), tiny_config(out, **changes))
            assert sorted(os.listdir(out)) == before, name      # nothing touched
        first.send_signal(signal.SIGINT)                        # it saves `last` and ends
        assert first.wait(timeout=60) == 128 + signal.SIGINT
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    assert not (out / ".lock").exists()
    result = cli("train", corpus, "--out", out, "--cache-dir", cache, "--resume", "--steps",
                 saved_step(out) + 5, "--no-progress", "--sample-length", "0")
    assert result.exit_code == 0 and "stopped by the step limit" in result.output, result.output


def test_a_lock_left_by_a_killed_run_is_recovered(trained, tmp_path):
    corpus, out, cache = trained.parent / "corpus.txt", tmp_path / "run", tmp_path / "cache"
    first = start_training(corpus, out, cache, "--time-limit", "120s")
    first.kill()                                               # kill -9: nothing cleans up
    first.communicate()
    assert (out / ".lock").read_text().split()[0] == str(first.pid)
    result = cli("train", corpus, "--out", out, "--cache-dir", cache, "--resume", "--steps",
                 saved_step(out) + 5, "--no-progress", "--sample-length", "0")
    assert result.exit_code == 0, result.output
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("holder", ["a dead process", "this very process", "empty", "garbage"])
def test_a_lock_file_nobody_holds_does_not_block(trained, tmp_path, holder):
    # Only a process that holds the file's lock counts: a file whose process is gone (or that
    # says anything at all) is a leftover.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    text = {"a dead process": f"{dead} {os.uname().nodename}\n",
            "this very process": f"{os.getpid()} {os.uname().nodename}\n", "empty": "",
            "garbage": "not a pid"}[holder]
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / ".lock").write_text(text)
    config = tiny_config(run, steps=45, resume=True)
    config.cache_dir = str(tmp_path / "cache")
    assert train_run(str(trained.parent / "corpus.txt"), config).step == 45
    assert not (run / ".lock").exists()


def test_a_failed_run_leaves_no_folder_and_no_lock(corpus, tmp_path):
    # A run that fails before its first checkpoint leaves nothing; a folder that held something
    # stays, without the lock.
    with pytest.raises(CharRNNError, match="not enough memory"):
        train_run(str(corpus), tiny_config(tmp_path / "new", batch_size=1 << 20, seq_len=1 << 20))
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    one_line_error(cli("train", corpus, "--out", tmp_path / "mine", "--batch-size", "1048576",
                       "--seq-len", "1048576", "--no-progress"), "not enough memory")
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    (tmp_path / "empty").mkdir()           # an empty folder made for the run: gone with it
    one_line_error(cli("train", corpus, "--out", tmp_path / "empty", "--batch-size", "1048576",
                       "--seq-len", "1048576", "--no-progress"), "not enough memory")
    assert not (tmp_path / "empty").exists()
