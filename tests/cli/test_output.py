"""Pipes and full disks: output to a reader that went away (`| head`) ends quietly with exit 0;
output to a full device is one line `error: cannot write the output: ...` and exit 1, with
nothing printed at interpreter exit. Real subprocesses, all started at once."""
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

COMMANDS = {   # name: arguments after `charrnn` (RUN: the trained run, TEXT: its corpus)
    "sample, streamed": ["sample", "RUN", "--length", "100000", "--seed", "1"],
    "sample, a batch": ["sample", "RUN", "--length", "2000", "--num-samples", "3"],
    "info": ["info", "RUN"],
    "eval": ["eval", "RUN", "TEXT", "--cache-dir", "CACHE"],
    "--help": ["--help"],
    "train --help": ["train", "--help"],
    "--version": ["--version"],
}
TO_A_PIPE = ("sample, streamed", "sample, a batch", "info", "--help")
TO_A_FULL_DEVICE = ("sample, streamed", "eval", "train --help", "--version")


def _start(trained, tmp_path, args, stdout):
    args = [{"RUN": str(trained), "TEXT": str(trained.parent / "corpus.txt"),
             "CACHE": str(tmp_path / "cache")}.get(a, a) for a in args]
    return subprocess.Popen([sys.executable, "-m", "charrnn", *args], stdout=stdout,
                            stderr=subprocess.PIPE, env=ENV)


def test_a_reader_that_goes_away_ends_the_command_quietly(trained, tmp_path):
    # The read end is closed before the command writes anything: its first write meets a
    # broken pipe, as `| head -c 20` makes a long sample's later writes do.
    started = {}
    for name in TO_A_PIPE:
        read, write = os.pipe()
        started[name] = _start(trained, tmp_path, COMMANDS[name], write)
        os.close(write)
        os.close(read)
    for name, process in started.items():
        _, stderr = process.communicate(timeout=180)
        assert (process.returncode, stderr.decode()) == (0, ""), name


def test_the_reader_gets_its_text_then_the_command_ends_quietly(trained, tmp_path):
    process = _start(trained, tmp_path, COMMANDS["sample, streamed"], subprocess.PIPE)
    head = process.stdout.read(20)             # `| head -c 20`
    process.stdout.close()
    assert len(head) == 20
    assert process.wait(timeout=180) == 0 and process.stderr.read() == b""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_device_is_one_line_and_exit_1(trained, tmp_path):
    started = {}
    for name in TO_A_FULL_DEVICE:
        with open("/dev/full", "w") as full:
            started[name] = _start(trained, tmp_path, COMMANDS[name], full)
    for name, process in started.items():
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == 1, (name, stderr)
        assert stderr.decode() == "error: cannot write the output: No space left on device\n", \
            (name, stderr)
