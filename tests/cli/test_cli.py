import json
import os
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main

TINY = ["--preset", "tiny", "--no-progress", "--sample-length", "40"]


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def test_every_command_has_help():
    for command in ([], ["train"], ["sample"], ["eval"], ["info"]):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_help_gives_each_bounded_option_its_range():
    from charrnn import api
    from charrnn.config import SampleConfig, TrainConfig
    help_text = " ".join(run("train", "--help").output.split())   # (click wraps lines)
    assert "Peak learning rate (> 0)." in help_text
    for cls, command in ((TrainConfig, "train"), (SampleConfig, "sample")):
        text = " ".join(run(command, "--help").output.split())
        for item in api.declared(cls):
            spec = item.spec
            if spec.cli and spec.bounded and not spec.choices:
                assert f"({spec.range_text()})" in text, item.name


def test_train_sample_eval_info(corpus, tmp_path):
    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, "--steps", 20, "--eval-interval", 10,
                 "--cache-dir", tmp_path / "cache", *TINY)
    assert result.exit_code == 0, result.output
    assert "bits/char" in result.output and "charrnn sample" in result.output
    first = run("sample", out, "--prime", "the", "--length", 60, "--seed", 7)
    again = run("sample", out, "--prime", "the", "--length", 60, "--seed", 7)
    assert first.exit_code == 0 and first.output == again.output
    assert first.output.startswith("the") and len(first.output) == 3 + 60 + 1
    several = run("sample", out, "--num-samples", 3, "--length", 20, "--seed", 1)
    assert several.output.count("--- sample") == 3
    fast = run("sample", out, "--prime", "the", "--length", 60, "--seed", 7, "--precision", "bf16")
    assert fast.exit_code == 0 and fast.output.startswith("the") and len(fast.output) == 64
    evaluated = run("eval", out, corpus)
    assert evaluated.exit_code == 0 and "bits/char" in evaluated.output
    info = run("info", out)
    assert info.exit_code == 0 and '"cell": "lstm"' in info.output


@pytest.mark.parametrize("args, message", [
    (["train", "no/such/file.txt"], "does not exist"),
    (["sample", "no/such/run"], "does not exist"),
    (["train", "CORPUS", "--time-limit", "soon"], "cannot read time"),
    (["train", "CORPUS", "--batch-size", "0"], "--batch-size must be in [1, 1048576], got 0"),
    (["sample", "RUN", "--temperature", "0"], "--temperature must be > 0, got 0"),
    (["sample", "RUN", "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["sample", "RUN", "--top-k", "0"], "--top-k must be >= 1, got 0"),
    (["sample", "RUN", "--length", "-5"], "--length must be in [0, 1000000000], got -5"),
    (["sample", "RUN", "--prime", "Zzz"], "never saw"),
    (["train", "CORPUS", "--out", "RUN"], "already holds a model"),
    (["sample", "RUN", "--bogus"], "no such option"),
])
def test_errors_are_one_line_without_traceback(trained, corpus, args, message):
    args = [str(trained) if a == "RUN" else str(corpus) if a == "CORPUS" else a for a in args]
    result = run(*args, "--no-progress" if args[0] == "train" else "--length=1"
                 if "--length" not in args else "--seed=1")
    assert result.exit_code != 0
    assert message in result.output
    lines = [l for l in result.output.splitlines() if l.strip() and not l.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output


def test_real_subprocess_train_then_sample(corpus, tmp_path):
    env = {**os.environ, "PYTHONIOENCODING": "", "LANG": "C", "LC_ALL": "C"}
    out = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(out),
                            "--steps", "10", "--cache-dir", str(tmp_path / "cache"), *TINY],
                           capture_output=True, env=env, timeout=180)
    assert train.returncode == 0, train.stderr.decode()
    sample = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(out), "--prime", "café",
                             "--length", "30", "--seed", "1"], capture_output=True, env=env,
                            timeout=120)
    assert sample.returncode == 0, sample.stderr.decode()
    assert sample.stdout.decode("utf-8").startswith("café")
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["train"]["steps"] == 10


def test_the_printed_sample_command_works_as_printed(tmp_path, monkeypatch):
    # A corpus without "ROMEO:": the hint primes with a word of this corpus.
    corpus = tmp_path / "letters.txt"
    corpus.write_text("Liebe Anna,\nwie geht es dir? Mir geht es gut.\n" * 300, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHARRNN_HINT", raising=False)
    result = run("train", corpus, "--out", "run", "--steps", 10, "--cache-dir", "cache", *TINY)
    assert result.exit_code == 0, result.output
    command = result.output.split("--- sample more with: ")[1].strip()
    sampled = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert sampled.returncode == 0, (command, sampled.stderr)
    prime = shlex.split(command)[shlex.split(command).index("--prime") + 1]
    assert prime in corpus.read_text(encoding="utf-8") and sampled.stdout.startswith(prime)
    monkeypatch.setenv("CHARRNN_HINT", "make")       # as `make train` starts it
    again = run("train", corpus, "--out", "run", "--steps", 12, "--resume", *TINY)
    assert f"make sample NAME=run PRIME={prime}" in again.output, again.output
