"""Messages that are true and alike: the usage errors click raises itself read like every other
error (one line starting `error:`, click's suggestion kept), the API suggests option names as
click does, and what a message advises exists and applies."""
import os
import subprocess
import sys

import pytest

import charrnn
from charrnn import CharRNNError
from charrnn.api import train_config, train_run
from conftest import cli, make_corpus, one_line_error, tiny_config

# (arguments, what the one line says; RUN is the trained run)
USAGE = {
    "unknown option": (["sample", "RUN", "--sed", "1"], "error: no such option '--sed'"),
    "unknown option, suggestion kept": (["sample", "RUN", "--lenght", "9"], "'--length'"),
    "unknown command": (["smaple", "RUN"], "error: no such command 'smaple'"),
    "unknown command, suggestion kept": (["smaple", "RUN"], "'sample'"),
    "bad value": (["sample", "RUN", "--length", "many"],
                  "error: invalid value for '--length': 'many' is not a valid integer"),
    "bad choice": (["train", "x.txt", "--cell", "transformer"],
                   "error: invalid value for '--cell': 'transformer' is not one of"),
    "missing argument": (["eval", "RUN"], "error: missing argument 'TEXTFILE'"),
    "option without its value": (["sample", "RUN", "--temperature"],
                                 "error: option '--temperature' requires an argument"),
    "extra argument": (["info", "RUN", "RUN"], "error: got unexpected extra argument"),
    "no command at all": ([], "error: give a command: train, sample, eval, "),
}


def _args(args, trained):
    return [str(trained) if a == "RUN" else a for a in args]


@pytest.mark.parametrize("name", list(USAGE))
def test_usage_errors_read_like_every_other_error(trained, name):
    args, message = USAGE[name]
    result = cli(*_args(args, trained))
    assert result.exit_code == 2                      # a usage error, as click numbers it
    one_line_error(result, message)


def test_usage_errors_in_a_real_process(trained):
    done = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(trained), "--lenght",
                           "9"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: no such option '--lenght'. Did you mean '--length'?\n"


def test_the_version_is_the_package_version():
    result = cli("--version")
    assert result.exit_code == 0 and result.output == f"charrnn, version {charrnn.__version__}\n"


# The API's own "usage errors": a misspelt option name gets a suggestion.
API = {
    "generate(temprature=)": (lambda run: charrnn.load(run).generate("the", temprature=0.5),
                              "unknown sampling option 'temprature' (did you mean "
                              "'temperature'?): use length, temperature"),
    "train_config(hiden_size=)": (lambda run: train_config(str(run.parent / "corpus.txt"),
                                                           str(run), hiden_size=8),
                                  "unknown training option 'hiden_size' (did you mean "
                                  "'hidden_size'?)"),
    "preset('cpu1m')": (lambda run: charrnn.preset("cpu1m"),
                        "unknown preset 'cpu1m' (did you mean 'cpu-1m'?): choose one of"),
    "no suggestion when nothing is close": (lambda run: charrnn.preset("zzz"),
                                            "unknown preset 'zzz': choose one of"),
}


@pytest.mark.parametrize("name", list(API))
def test_the_api_suggests_option_names(trained, name):
    call, message = API[name]
    with pytest.raises(CharRNNError) as raised:
        call(trained)
    assert str(raised.value).startswith(message), str(raised.value)


# What a message advises must apply: validation's length does not depend on --batch-size.
def test_a_short_validation_text_names_what_helps(corpus, tmp_path):
    message = "validation text too short: 20 chars, but 1 streams x seq_len 32 need 33; lower " \
              "--seq-len, raise --val-fraction or give more text"
    text = corpus.read_text(encoding="utf-8")[:200]
    corpus.write_text(text, encoding="utf-8")
    with pytest.raises(CharRNNError, match=message):
        train_run(str(corpus), tiny_config(tmp_path / "run", batch_size=1, val_fraction=0.1))
    line = one_line_error(cli("train", corpus, "--out", tmp_path / "run", "--preset", "tiny",
                              "--batch-size", "1", "--no-progress"), message)
    assert "--batch-size" not in line
    assert not (tmp_path / "run").exists()


def test_a_run_that_diverges_before_its_first_checkpoint_says_so(corpus, tmp_path):
    # --lr 1e30: the loss is nan within a few steps, long before the first evaluation (step 10)
    message = "no checkpoint was saved before (the first evaluation is at step 10)"
    with pytest.raises(CharRNNError, match=r"lower --lr or --clip; no checkpoint was saved"):
        train_run(str(corpus), tiny_config(tmp_path / "run", lr=1e30, grad_clip=0.0))
    assert not (tmp_path / "run").exists()            # nothing half-made stays behind
    one_line_error(cli("train", corpus, "--out", tmp_path / "run", "--preset", "tiny", "--lr",
                       "1e30", "--clip", "0", "--eval-interval", "10", "--steps", "30",
                       "--no-progress", "--cache-dir", tmp_path / "cache"), message)
    assert not (tmp_path / "run").exists()


def test_what_a_new_user_tried_gets_one_line(trained, corpus, tmp_path):
    """Found by trying the README as a new user: each of these was a traceback or silent."""
    import json
    import shutil

    from click.testing import CliRunner

    import charrnn
    from charrnn import CharRNNError
    from charrnn.cli.commands import main
    model = charrnn.load(trained)
    with pytest.raises(CharRNNError, match="prime must be text"):
        model.generate(123, length=5)
    with pytest.raises(CharRNNError, match="num_samples or its old name n, not both"):
        model.generate("the", n=2, num_samples=3)
    result = CliRunner().invoke(main, ["sample", str(trained), "--stop", ""])
    assert result.exit_code != 0 and result.output.startswith("error: --stop must not be empty")
    result = CliRunner().invoke(main, ["train", str(corpus), "--out", "", "--preset", "tiny"])
    assert result.exit_code != 0 and result.output.startswith("error: --out must not be empty")
    # A config.json that asks for a model too large to allocate is a corrupt checkpoint.
    broken = tmp_path / "broken"
    shutil.copytree(trained / "best", broken)
    config = json.loads((broken / "config.json").read_text())
    config["model"]["hidden_size"] = 1_000_000
    (broken / "config.json").write_text(json.dumps(config))
    for args in (["sample", str(broken), "--length", "5"], ["eval", str(broken), str(corpus)]):
        result = CliRunner().invoke(main, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert "bad model configuration" in lines[0] and "Traceback" not in result.output


def test_ctrl_c_while_torch_loads_is_one_line():
    """The `charrnn` command's entry point (setup.py): a KeyboardInterrupt raised while the
    command line imports torch ends with `error: interrupted`, status 130, no traceback."""
    script = (
        "import builtins\n"
        "real = builtins.__import__\n"
        "def slow_torch(name, *args, **kwargs):\n"
        "    if name == 'torch':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = slow_torch\n"
        "from charrnn.__main__ import main\n"
        "main()\n")
    result = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert (result.returncode, result.stderr) == (130, "error: interrupted\n")
    assert result.stdout == ""


def test_an_error_met_through_make_names_the_make_variable(tmp_path, monkeypatch):
    """`make train` twice: the second is told ARGS=--resume / ARGS=--overwrite / NAME=, what
    it can change on make's command line (Makefile sets CHARRNN_HINT=make)."""
    corpus = make_corpus(tmp_path / "c.txt")
    args = ["train", corpus, "--out", tmp_path / "run", "--preset", "tiny", "--steps", "2",
            "--no-progress", "--sample-length", "0", "--cache-dir", tmp_path / "cache"]
    assert cli(*args).exit_code == 0
    plain = one_line_error(cli(*args), "already holds a model")
    assert "--resume" in plain and "ARGS=" not in plain
    monkeypatch.setenv("CHARRNN_HINT", "make")
    through_make = one_line_error(cli(*args), "already holds a model")
    assert "pass ARGS=--resume to continue it, ARGS=--overwrite to replace it, or choose " \
           "another NAME=" in through_make
