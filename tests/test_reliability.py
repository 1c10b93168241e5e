"""What happens when...: bad input, faults during training and saving, untrusted checkpoints.

Every bad input is checked twice: through the CLI (exit code != 0, exactly one line
``error: ...``, no traceback, nothing written over) and through the Python API (CharRNNError).
The signal and kill -9 tests run real subprocesses with tiny models.
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import charrnn
from charrnn import CharRNNError
from charrnn.api import train_run
from charrnn.model.checkpoint import (find_checkpoint, load_checkpoint, load_trainer_state, recover,
                                save_checkpoint, saved_train_config)
from charrnn.config import parse_duration
from conftest import cli, make_corpus, one_line_error, tiny_config

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
# Subprocesses: one thread each (fast for tiny models, and the same arithmetic in every run).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


# ---------------------------------------------------------------------------------------------
# Helpers


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots``: path -> hash of its bytes."""
    files = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                files[str(path)] = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    return files


def assert_nothing_written_over(before: dict, after: dict) -> None:
    """Every file that was there is unchanged; new files only in a token cache."""
    changed = [p for p in before if after.get(p) != before[p]]
    added = [p for p in after if p not in before and "cache" not in Path(p).parts]
    assert not changed and not added, (changed, added)


def assert_one_line_error(result, match: str = "") -> str:
    """``one_line_error``, and nothing else printed (no note either)."""
    line = one_line_error(result, match)
    assert len([l for l in result.output.splitlines() if l.strip()]) == 1, result.output
    return line


def weights(folder: Path) -> dict:
    return load_file(Path(folder) / "model.safetensors")


def max_abs_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Evil:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


# ---------------------------------------------------------------------------------------------
# Bad input: one table, driven through the CLI and through the API


class World:
    """Bad corpora and broken checkpoints, built once per module (tests never modify them)."""

    def __init__(self, root: Path, trained: Path):
        self.root, self.run = root, trained
        self.corpus = make_corpus(root / "corpus.txt")
        (root / "empty.txt").write_bytes(b"")
        (root / "whitespace.txt").write_bytes(b" \n\t  \r\n \n")
        latin1 = "café au lait, crème brûlée\n".encode("latin-1")
        (root / "latin1.txt").write_bytes(latin1 * 200)
        (root / "binary.bin").write_bytes(bytes(range(256)) * 50)
        (root / "short.txt").write_text("to be or not to be\n", encoding="utf-8")
        (root / "empty_dir").mkdir()
        best = trained / "best"

        def broken(name: str) -> Path:
            shutil.copytree(best, root / name)
            return root / name

        data = (best / "model.safetensors").read_bytes()
        (broken("trunc_weights") / "model.safetensors").write_bytes(data[:len(data) // 2])
        config = (best / "config.json").read_text()
        (broken("trunc_config") / "config.json").write_text(config[:len(config) // 2])
        (broken("garbage_config") / "config.json").write_bytes(bytes(range(200, 256)) * 5)
        (broken("bad_tokenizer") / "tokenizer.json").write_text('{"model": ')
        (broken("no_tokenizer") / "tokenizer.json").unlink()
        newer = json.loads(config)
        newer["format_version"] = 99
        (broken("newer") / "config.json").write_text(json.dumps(newer))
        (broken("foreign") / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
        torch.save({"state_dict": {"weight": torch.zeros(3)}}, root / "other.pt")
        # Run folders to resume: one with a planted pickle, one with a truncated trainer state.
        self.planted = root / "planted_by_pickle"
        shutil.copytree(trained, root / "evil_run")
        torch.save({"optimizer": Evil(self.planted), "loop": {}},
                   root / "evil_run" / "last" / "trainer_state.pt")
        shutil.copytree(trained, root / "cut_run")
        state = root / "cut_run" / "last" / "trainer_state.pt"
        state.write_bytes(state.read_bytes()[:1000])
        shutil.copytree(trained, root / "owned")      # a folder that holds another model
        shutil.copytree(trained, root / "tampered_run")
        tampered = json.loads(config)
        tampered["train"]["lr"] = "fast"
        (root / "tampered_run" / "last" / "config.json").write_text(json.dumps(tampered))
        (root / "a_file").write_text("not a folder")

    def paths(self, tmp: Path) -> dict[str, str]:
        names = {p.name.split(".")[0]: str(p) for p in self.root.iterdir()}
        return {**names, "root": str(self.root), "run": str(self.run), "out": str(tmp / "out"),
                "cache": str(tmp / "cache")}


@pytest.fixture(scope="module")
def world(tmp_path_factory, trained) -> World:
    return World(tmp_path_factory.mktemp("world"), trained)


TRAIN = ["--out", "{out}", "--cache-dir", "{cache}", "--preset", "tiny", "--no-progress",
         "--sample-length", "0", "--steps", "2"]


def _train(corpus_key, **changes):
    """An API call: train_run on the named corpus with a tiny config."""
    model_changes = changes.pop("model_changes", {})

    def call(w, tmp):
        config = tiny_config(tmp / "out", **{"steps": 2, **changes})
        for key, value in model_changes.items():
            setattr(config.model, key, value)
        paths = w.paths(tmp)
        return train_run(paths.get(corpus_key) or corpus_key.format(**paths), config)
    return call


def _load(key, **kwargs):
    return lambda w, tmp: charrnn.load(w.paths(tmp)[key], **kwargs)


def _generate(prime="the", **options):
    return lambda w, tmp: charrnn.load(w.run, device="cpu").generate(prime, **options)


def _resume(run_key):
    def call(w, tmp):
        config = tiny_config(Path(w.paths(tmp)[run_key]), steps=45, resume=True)
        config.cache_dir = str(tmp / "cache")
        return train_run(str(w.corpus), config)
    return call


# (id, CLI arguments, API call, text the message holds)
BAD_INPUT = [
    ("empty-corpus", ["train", "{empty}", *TRAIN], _train("empty"), "is empty"),
    ("whitespace-corpus", ["train", "{whitespace}", *TRAIN], _train("whitespace"),
     "only whitespace"),
    ("not-utf8", ["train", "{latin1}", *TRAIN], _train("latin1"),
     "latin1.txt is not valid utf-8 at byte 3: pass --encoding to name its encoding or "
     "--errors replace"),
    ("binary-file", ["train", "{binary}", *TRAIN], _train("binary"), "binary file"),
    ("shorter-than-one-batch", ["train", "{short}", *TRAIN], _train("short"),
     "text too short"),
    ("missing-corpus", ["train", "{root}/nope.txt", *TRAIN], _train("{root}/nope.txt"),
     "does not exist"),
    ("empty-folder", ["train", "{empty_dir}", *TRAIN], _train("empty_dir"), "holds no files"),
    ("empty-glob", ["train", "{root}/nothing*.txt", *TRAIN], _train("{root}/nothing*.txt"),
     "no files match"),
    ("checkpoint-missing", ["sample", "{root}/no_such_run"], _load("out"), "does not exist"),
    ("checkpoint-missing-a-file", ["sample", "{no_tokenizer}"], _load("no_tokenizer"),
     "incomplete: missing tokenizer.json"),
    ("checkpoint-truncated-weights", ["sample", "{trunc_weights}"], _load("trunc_weights"),
     "model.safetensors is corrupt"),
    ("checkpoint-truncated-config", ["sample", "{trunc_config}"], _load("trunc_config"),
     "config.json is corrupt"),
    ("checkpoint-garbage-config", ["info", "{garbage_config}"], _load("garbage_config"),
     "config.json is corrupt"),
    ("checkpoint-corrupt-tokenizer", ["sample", "{bad_tokenizer}"], _load("bad_tokenizer"),
     "cannot read tokenizer"),
    ("not-a-checkpoint-pt-file", ["sample", "{other}"], _load("other"),
     "not a charrnn checkpoint"),
    ("not-a-checkpoint-folder", ["sample", "{foreign}"], _load("foreign"),
     "is not a charrnn checkpoint"),
    ("not-a-checkpoint-empty-folder", ["sample", "{empty_dir}"], _load("empty_dir"),
     "holds no charrnn checkpoint"),
    ("newer-format-version", ["sample", "{newer}"], _load("newer"), "upgrade charrnn"),
    ("planted-pickle-on-resume", ["train", "{corpus}", "--out", "{evil_run}", "--resume",
                                  "--cache-dir", "{cache}", "--no-progress"],
     _resume("evil_run"), "trainer_state.pt is corrupt or unsafe"),
    ("truncated-trainer-state-on-resume", ["train", "{corpus}", "--out", "{cut_run}", "--resume",
                                           "--cache-dir", "{cache}", "--no-progress"],
     _resume("cut_run"), "trainer_state.pt is corrupt or unsafe"),
    ("tampered-training-config-on-resume", ["train", "{corpus}", "--out", "{tampered_run}",
                                            "--resume", "--cache-dir", "{cache}"],
     lambda w, tmp: saved_train_config(w.root / "tampered_run" / "last"), "bad training configuration"),
    ("nothing-to-resume", ["train", "{corpus}", *TRAIN, "--resume"],
     _train("corpus", resume=True), "nothing to resume"),
    ("prime-outside-vocabulary", ["sample", "{run}", "--prime", "Zq€"], _generate("Zq€"),
     "never saw"),
    ("temperature-zero", ["sample", "{run}", "--temperature", "0"], _generate(temperature=0.0),
     "temperature must be > 0"),
    ("temperature-negative", ["sample", "{run}", "--temperature", "-1"],
     _generate(temperature=-1.0), "temperature must be > 0"),
    ("top-p-zero", ["sample", "{run}", "--top-p", "0"], _generate(top_p=0.0),
     "top_p must be in (0, 1]"),
    ("top-p-above-one", ["sample", "{run}", "--top-p", "1.5"], _generate(top_p=1.5),
     "top_p must be in (0, 1]"),
    ("top-k-zero", ["sample", "{run}", "--top-k", "0"], _generate(top_k=0), "top_k must be >= 1"),
    ("length-negative", ["sample", "{run}", "--length", "-1"], _generate(length=-1),
     "length must be in [0, 1000000000], got -1"),
    ("num-samples-zero", ["sample", "{run}", "--num-samples", "0"], _generate(n=0),
     "num_samples must be in [1, 65536], got 0"),
    ("layers-zero", ["train", "{corpus}", *TRAIN, "--layers", "0"],
     _train("corpus", model_changes={"layers": 0}), "layers must be in [1, 64], got 0"),
    ("hidden-size-negative", ["train", "{corpus}", *TRAIN, "--hidden-size", "-1"],
     _train("corpus", model_changes={"hidden_size": -1}), "hidden_size must be in [1, 1048576], got -1"),
    ("embed-size-zero", ["train", "{corpus}", *TRAIN, "--embed-size", "0"],
     _train("corpus", model_changes={"embed_size": 0}), "embed_size must be in [1, 1048576], got 0"),
    ("seq-len-zero", ["train", "{corpus}", *TRAIN, "--seq-len", "0"],
     _train("corpus", seq_len=0), "seq_len must be in [1, 1048576], got 0"),
    ("batch-size-negative", ["train", "{corpus}", *TRAIN, "--batch-size", "-3"],
     _train("corpus", batch_size=-3), "batch_size must be in [1, 1048576], got -3"),
    ("steps-zero", ["train", "{corpus}", *TRAIN, "--steps", "0"], _train("corpus", steps=0),
     "steps must be >= 1, got 0"),
    ("lr-zero", ["train", "{corpus}", *TRAIN, "--lr", "0"], _train("corpus", lr=0.0),
     "lr must be > 0, got 0"),
    ("beta1-one", ["train", "{corpus}", *TRAIN, "--beta1", "1"], _train("corpus", beta1=1.0),
     "beta1 must be in [0, 1), got 1"),
    ("bad-time-limit", ["train", "{corpus}", *TRAIN, "--time-limit", "soon"],
     lambda w, tmp: parse_duration("soon"), "cannot read time"),
    ("train-device-cuda-absent", ["train", "{corpus}", *TRAIN, "--device", "cuda"],
     _train("corpus", device="cuda"), "no CUDA device"),
    ("sample-device-cuda-absent", ["sample", "{run}", "--device", "cuda"],
     _load("run", device="cuda"), "no CUDA device"),
    ("out-holds-another-model", ["train", "{corpus}", *TRAIN, "--out", "{owned}"],
     lambda w, tmp: train_run(str(w.corpus), tiny_config(w.root / "owned", steps=2)),
     "already holds a model: pass --resume to continue it, --overwrite to replace it"),
    ("out-is-a-file", ["train", "{corpus}", *TRAIN, "--out", "{a_file}"],
     lambda w, tmp: train_run(str(w.corpus), tiny_config(w.root / "a_file", steps=2)),
     "is a file: give a folder"),
]
IDS = [case[0] for case in BAD_INPUT]


def _skip_cuda(case_id):
    if "cuda" in case_id and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


@pytest.mark.parametrize("case_id, args, api_call, message", BAD_INPUT, ids=IDS)
def test_bad_input_through_the_cli(world, tmp_path, case_id, args, api_call, message):
    _skip_cuda(case_id)
    before = snapshot(world.root, world.run, tmp_path)
    paths = world.paths(tmp_path)
    result = cli(*[a.format(**paths) for a in args])
    assert_one_line_error(result, as_typed(message))
    assert_nothing_written_over(before, snapshot(world.root, world.run, tmp_path))
    assert not world.planted.exists()


def as_typed(message: str) -> str:
    """The CLI names an option as the user typed it: "top_p must" -> "--top-p must"."""
    name, sep, rest = message.partition(" must ")
    if sep and name.isidentifier():
        return f"--{name.replace('_', '-')} must {rest}"
    return message


@pytest.mark.parametrize("case_id, args, api_call, message", BAD_INPUT, ids=IDS)
def test_bad_input_through_the_api(world, tmp_path, case_id, args, api_call, message):
    _skip_cuda(case_id)
    before = snapshot(world.root, world.run, tmp_path)
    with pytest.raises(CharRNNError) as raised:
        api_call(world, tmp_path)
    assert message.lower() in str(raised.value).lower()
    assert "\n" not in str(raised.value)
    assert_nothing_written_over(before, snapshot(world.root, world.run, tmp_path))
    assert not world.planted.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_the_planted_pickle_is_live(world, tmp_path):
    """The planted trainer_state.pt really would create a file if it were unpickled."""
    target = tmp_path / "created"
    torch.save({"optimizer": Evil(target)}, tmp_path / "state.pt")
    torch.load(tmp_path / "state.pt", weights_only=False)
    assert target.exists()
    with pytest.raises(CharRNNError, match="corrupt or unsafe"):
        load_trainer_state(world.root / "evil_run" / "last")
    assert not world.planted.exists()
    with open(tmp_path / "trainer_state.pt", "wb") as handle:   # a bare pickle, not torch's zip
        pickle.dump({"x": Evil(world.planted)}, handle)
    with pytest.raises(CharRNNError, match="corrupt or unsafe"):
        load_trainer_state(tmp_path)
    assert not world.planted.exists()


def test_encoding_escape_hatches_work(world, tmp_path):
    text = world.corpus.read_bytes()
    cut = text.index(b"\n", 5000) + 1
    bad = tmp_path / "bad.txt"
    bad.write_bytes(text[:cut] + b"\xff\xfe" + text[cut:])
    first = cli("train", bad, "--out", tmp_path / "a", "--cache-dir", tmp_path / "cache",
                "--preset", "tiny", "--no-progress", "--sample-length", "0", "--steps", "2")
    assert_one_line_error(first, f"bad.txt is not valid utf-8 at byte {cut}: pass --encoding")
    replaced = cli("train", bad, "--out", tmp_path / "a", "--cache-dir", tmp_path / "cache",
                   "--preset", "tiny", "--no-progress", "--sample-length", "0", "--steps", "2",
                   "--errors", "replace")
    assert replaced.exit_code == 0, replaced.output
    assert "\ufffd" in charrnn.load(tmp_path / "a").tokenizer.chars
    named = cli("train", world.root / "latin1.txt", "--out", tmp_path / "b", "--cache-dir",
                tmp_path / "cache", "--preset", "tiny", "--no-progress", "--sample-length", "0",
                "--steps", "2", "--encoding", "latin-1")
    assert named.exit_code == 0, named.output
    assert "é" in charrnn.load(tmp_path / "b").tokenizer.chars


def test_sample_under_a_c_locale_writes_utf8_to_a_file(trained, tmp_path):
    # No locale coercion and no UTF-8 mode: stdout would be ASCII if charrnn did not fix it.
    env = {k: v for k, v in ENV.items() if not k.startswith(("LC_", "PYTHONIOENCODING"))}
    env.update(LANG="C", LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
    target = tmp_path / "out.txt"
    with open(target, "wb") as handle:
        done = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(trained), "--prime",
                               "café naïve", "--length", "40", "--seed", "1"], stdout=handle,
                              stderr=subprocess.PIPE, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    text = target.read_bytes().decode("utf-8")          # strict: must be valid UTF-8
    assert text.startswith("café naïve") and text.endswith("\n")
    assert len(text) == len("café naïve") + 40 + 1


# ---------------------------------------------------------------------------------------------
# Signals: SIGINT / SIGTERM mid-training, then --resume, compared with an uninterrupted run

STEPS, EVAL = 100, 10
FIXED = ["--preset", "tiny", "--no-progress", "--sample-length", "0", "--steps", str(STEPS),
         "--eval-interval", str(EVAL), "--dropout", "0.1", "--seed", "5"]


def _train_command(corpus: Path, out: Path, cache: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(out),
            "--cache-dir", str(cache), *extra]


def _evaluated_steps(out: Path) -> list[int]:
    """Steps of the evaluations logged so far (whole lines only: the file may be growing)."""
    try:
        text = (out / "metrics.jsonl").read_text()
    except OSError:
        return []
    return [json.loads(line)["step"] for line in text.splitlines(keepends=True)
            if line.endswith("\n")]


def _read_metrics(out: Path) -> list[dict]:
    drop = ("elapsed", "chars_per_sec")
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def _interrupt(command: list[str], sig: signal.Signals, cwd: Path, ready) -> tuple[int, str]:
    """Run ``command``, send ``sig`` once ``ready()`` says the training loop runs."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            cwd=cwd, text=True)
    try:
        wait_for(lambda: ready() or proc.poll() is not None, 120, "the training loop")
        assert proc.poll() is None, "training ended before it could be interrupted"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, stderr


def test_sigint_then_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt", chars=30_000)
    cache, straight, out = tmp_path / "cache", tmp_path / "straight", tmp_path / "split"
    # The uninterrupted run goes on in the background meanwhile.
    uninterrupted = subprocess.Popen(_train_command(corpus, straight, cache, *FIXED),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                                     cwd=tmp_path)
    try:
        stopped_at = 0
        resume = _train_command(corpus, out, cache, "--resume", "--no-progress",
                                "--sample-length", "0")
        for sig, command in ((signal.SIGINT, _train_command(corpus, out, cache, *FIXED)),
                             (signal.SIGTERM, resume)):
            # Interrupt once an evaluation past the last stop is logged: the loop is running.
            previous = stopped_at
            code, stderr = _interrupt(command, sig, tmp_path,
                                      lambda: any(s > previous for s in _evaluated_steps(out)))
            assert code == 128 + sig, stderr
            # The resume command as this process was started: here `python -m charrnn`.
            assert f"stopped by {sig.name}; continue with: {sys.executable} -m charrnn train " \
                f"{corpus} --out {out} --resume" in stderr
            assert "Traceback" not in stderr
            load_checkpoint(out / "last")                     # complete and loadable
            stopped_at = load_trainer_state(out / "last")["loop"]["step"]
            assert previous + EVAL <= stopped_at < STEPS
        finished = subprocess.run(resume, capture_output=True, text=True, env=ENV, cwd=tmp_path,
                                  timeout=300)
        assert finished.returncode == 0, finished.stderr
        assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read().decode()
    finally:
        if uninterrupted.poll() is None:
            uninterrupted.kill()
        uninterrupted.communicate()
    for name in ("last", "best"):
        a, b = weights(straight / name), weights(out / name)
        assert max_abs_difference(a, b) == 0.0
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert _read_metrics(out) == _read_metrics(straight)
    assert load_trainer_state(out / "last")["loop"]["step"] == STEPS


# ---------------------------------------------------------------------------------------------
# kill -9 while checkpoints are being written

SAVER = """
import os, sys
from pathlib import Path
import torch
from charrnn.model.checkpoint import save_checkpoint
from charrnn.config import ModelConfig
from charrnn.model.network import CharRNN
from charrnn.data.tokenizer import CharTokenizer

run = Path(sys.argv[1])
torch.manual_seed(0)
tokenizer = CharTokenizer("abcdefgh \\n")
model = CharRNN(ModelConfig(vocab_size=tokenizer.vocab_size, cell="lstm", layers=2,
                            hidden_size=128, embed_size=16))
state = {"optimizer": {"state": {}, "param_groups": []}, "loop": {"step": 1},
         "padding": torch.zeros(200_000)}

def save_both(n):
    save_checkpoint(run / "best", model, tokenizer, {"metrics": {"n": n}})
    save_checkpoint(run / "last", model, tokenizer, {"metrics": {"n": n}}, state)

save_both(0)
print("ready", flush=True)
for line in sys.stdin:          # one writer process per line; the test kills it with SIGKILL
    pid = os.fork()
    if pid == 0:
        try:
            n = 0
            while True:
                n += 1
                save_both(n)
        finally:
            os._exit(1)
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def test_kill_9_during_checkpoint_writes_leaves_a_complete_checkpoint(tmp_path):
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", SAVER, str(run)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert child.stdout.readline().strip() == "ready"
        expected = weights(run / "best")
        rng, interrupted_saves = random.Random(4), 0
        for _ in range(8):
            child.stdin.write("go\n")
            child.stdin.flush()
            pid = int(child.stdout.readline())
            time.sleep(rng.uniform(0.0, 0.08))     # the fault: SIGKILL at a random moment
            os.kill(pid, signal.SIGKILL)
            assert child.stdout.readline().strip() == "reaped"
            interrupted_saves += any(p.name.startswith((".tmp-", ".old-")) for p in run.iterdir())
            model = charrnn.load(run, device="cpu")            # best; cleans up the leftovers
            assert all(torch.equal(expected[k], v) for k, v in model.net.state_dict().items())
            last = find_checkpoint(run, prefer="last")
            assert last.name == "last" and load_checkpoint(last)[2]["format"] == "charrnn"
            assert load_trainer_state(last)["loop"]["step"] == 1
            assert sorted(os.listdir(run)) == ["best", "last"]      # leftovers cleaned up
            assert all((run / n / "README.md").is_file() for n in ("best", "last"))  # the card
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert interrupted_saves >= 1    # the kills did land in the middle of saves


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no except clause catches it."""


def _save(folder: Path, value: float, **kwargs) -> None:
    model = charrnn.CharRNN(charrnn.ModelConfig(vocab_size=5, layers=1, hidden_size=8,
                                                embed_size=4))
    for p in model.parameters():
        torch.nn.init.constant_(p, value)
    save_checkpoint(folder, model, charrnn.CharTokenizer("abcd"), {"metrics": {}}, **kwargs)


def test_a_crash_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _save(run / "best", 1.0)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".tmp-"):   # killed after moving the old folder aside
            raise Killed
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(Killed):
        _save(run / "best", 2.0)
    monkeypatch.undo()
    assert not (run / "best").exists()
    assert {p.name.split("-")[0] for p in run.iterdir()} == {".old", ".tmp"}
    model = charrnn.load(run / "best", device="cpu")    # the folder itself, as well as the run
    assert all((p == 1.0).all() for p in model.net.parameters())
    assert sorted(os.listdir(run)) == ["best"]


def test_recover_leaves_running_writers_and_other_folders_alone(tmp_path):
    live = tmp_path / f".tmp-last-{os.getppid()}"       # the parent process: alive
    dead = tmp_path / ".tmp-last-999999999"
    users = tmp_path / ".tmp-notes-42"                  # not a checkpoint: never touched
    for folder in (live, dead, users):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    (users / "notes.txt").write_text("mine")
    recover(tmp_path)
    assert live.exists() and not dead.exists() and (users / "notes.txt").exists()


# ---------------------------------------------------------------------------------------------
# Disk full, read-only folder


def _copy_run(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A writable copy of the shared run, and its corpus."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run, trained.parent / "corpus.txt"


def _resume_config(run: Path):
    config = tiny_config(run, steps=45, resume=True)
    config.cache_dir = str(run.parent / "cache")
    return config


NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
WRITERS = {   # each writer of a checkpoint, failing as it does when the disk is full
    "config.json": ("charrnn.files.write_bytes", NO_SPACE),
    "model.safetensors": ("charrnn.files.write_bytes", NO_SPACE),
    "trainer_state.pt": ("torch.save", RuntimeError(
        "[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_disk_full_keeps_the_previous_checkpoint(trained, tmp_path, monkeypatch, writer):
    run, corpus = _copy_run(trained, tmp_path)
    target, error = WRITERS[writer]

    real = charrnn.files.write_bytes

    def fail(path=None, *args, **kwargs):
        if target.endswith("write_bytes") and Path(path).name != writer:
            return real(path, *args, **kwargs)     # only this file's write fails
        raise error

    monkeypatch.setattr(target, fail)
    # best is written before last: with only trainer_state.pt failing, a new best is fine.
    kept = [run / "last"] + ([run / "best"] if writer != "trainer_state.pt" else [])
    before = snapshot(*kept)
    with pytest.raises(CharRNNError, match="cannot write checkpoint .*previous checkpoint is "
                                           "intact: free disk space"):
        train_run(str(corpus), _resume_config(run))
    assert snapshot(*kept) == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
    result = cli("train", corpus, "--out", run, "--resume", "--steps", 45, "--cache-dir",
                 tmp_path / "cache", "--no-progress")
    assert_one_line_error(result, "cannot write checkpoint")
    assert snapshot(*kept) == before
    load_checkpoint(run / "best")
    monkeypatch.undo()       # space again: --resume goes on, and logs each evaluation once
    train_run(str(corpus), _resume_config(run))
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert steps == [10, 20, 30, 40, 45]


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only. Root ignores permission bits, so as root every write under it
    fails the way it does on a read-only mount."""
    changed = []

    def make(folder: Path) -> None:
        folder = folder.resolve()
        if os.geteuid() != 0:
            for path in [folder, *folder.rglob("*")]:
                changed.append((path, path.stat().st_mode))
                path.chmod(path.stat().st_mode & ~0o222)
            return

        def inside(path) -> bool:
            return Path(os.path.abspath(os.fspath(path))).is_relative_to(folder)

        def refuse(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        real_open, real_mkdir = builtins.open, os.mkdir
        real_rename, real_replace = os.rename, os.replace

        def open_(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and inside(file):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def mkdir(path, *args, **kwargs):
            if inside(path):
                refuse(path)
            return real_mkdir(path, *args, **kwargs)

        def moving(real):
            def move(src, dst, *args, **kwargs):
                if inside(src) or inside(dst):
                    refuse(dst)
                return real(src, dst, *args, **kwargs)
            return move

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)
        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "rename", moving(real_rename))
        monkeypatch.setattr(os, "replace", moving(real_replace))

    yield make
    for path, mode in reversed(changed):
        path.chmod(mode)


def test_read_only_output_folder_is_a_clear_error(trained, tmp_path, read_only):
    run, corpus = _copy_run(trained, tmp_path)
    (tmp_path / "cache").mkdir()
    before = snapshot(run)
    read_only(run)
    with pytest.raises(CharRNNError, match="(?i)cannot write .*(read-only|permission).*free "
                                           "disk space or make the folder writable"):
        train_run(str(corpus), _resume_config(run))
    result = cli("train", corpus, "--out", run, "--resume", "--steps", 45, "--cache-dir",
                 tmp_path / "cache", "--no-progress")
    assert_one_line_error(result, "make the folder writable")
    assert snapshot(run) == before


def test_a_failed_rename_puts_the_previous_checkpoint_back(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _save(run / "best", 1.0)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".tmp-"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(CharRNNError, match="previous checkpoint is intact"):
        _save(run / "best", 2.0)
    monkeypatch.undo()
    assert sorted(os.listdir(run)) == ["best"]
    assert all((p == 1.0).all() for p in charrnn.load(run, device="cpu").net.parameters())


# ---------------------------------------------------------------------------------------------
# Non-finite loss: a clear stop, and best/last keep the last good model


@pytest.fixture
def poison():
    """Spoil a training run's weights at step ``step``: "before" its forward pass, or "after"
    it (at the evaluation that follows), through torch's public global forward pre-hook.
    Each model counts its own steps, so every run in a test is spoiled alike."""
    handles = []

    def install(step: int, when: str, what: str) -> None:
        steps = weakref.WeakKeyDictionary()     # model -> training forwards so far

        def hook(module, args):
            if not isinstance(module, charrnn.CharRNN):
                return
            if module.training:
                steps[module] = steps.get(module, 0) + 1
            due = steps.get(module, 0) == step and (module.training == (when == "before"))
            if due:
                with torch.no_grad():
                    if what == "all":
                        for p in module.parameters():
                            p.fill_(float("nan"))
                    else:            # the embedding of <unk>: no loss ever sees it
                        module.embed.weight[0].fill_(float("inf"))

        handles.append(torch.nn.modules.module.register_module_forward_pre_hook(hook))

    yield install
    for handle in handles:
        handle.remove()


NAN_CASES = [("train-loss", 13, "before", "all", "loss became nan at step 13: lower --lr"),
             ("val-loss", 20, "after", "all", "diverged at step 20 (validation loss nan"),
             ("weights-only", 20, "after", "unk", "diverged at step 20 (the weights hold nan")]


@pytest.mark.parametrize("case, step, when, what, message", NAN_CASES,
                         ids=[c[0] for c in NAN_CASES])
def test_non_finite_loss_stops_and_keeps_the_good_checkpoints(corpus, tmp_path, poison,
                                                              case, step, when, what, message):
    poison(step, when, what)
    out = tmp_path / "run"
    with pytest.raises(CharRNNError, match=message.replace("(", r"\(")) as raised:
        train_run(str(corpus), tiny_config(out, steps=30, eval_interval=10))
    assert "last good checkpoint" in str(raised.value)
    for name in ("best", "last"):
        config = json.loads((out / name / "config.json").read_text())
        assert config["metrics"]["step"] == 10          # the last good evaluation
        assert all(torch.isfinite(w).all() for w in weights(out / name).values())
    assert [json.loads(line)["step"] for line in
            (out / "metrics.jsonl").read_text().splitlines()] == [10]
    result = cli("train", corpus, "--out", tmp_path / "again", "--cache-dir", tmp_path / "cache",
                 "--preset", "tiny", "--no-progress", "--steps", 30, "--eval-interval", 10)
    assert_one_line_error(result, "last good checkpoint")


# ---------------------------------------------------------------------------------------------
# Paths in a checkpoint are never trusted


def test_resume_ignores_paths_from_the_saved_config(trained, tmp_path, monkeypatch):
    home = tmp_path / "a" / "b"
    home.mkdir(parents=True)
    run, corpus = _copy_run(trained, home)
    evil_abs = tmp_path / "evil_abs"
    config_path = run / "last" / "config.json"
    config = json.loads(config_path.read_text())
    config["train"].update(out="../../evil", cache_dir=str(evil_abs))
    config_path.write_text(json.dumps(config))
    monkeypatch.chdir(home)
    result = cli("train", corpus, "--out", "run", "--resume", "--steps", 45, "--no-progress",
                 "--sample-length", "0")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "evil").exists() and not evil_abs.exists()
    assert json.loads(config_path.read_text())["metrics"]["step"] == 45
    assert json.loads(config_path.read_text())["train"]["out"] == "run"
    assert (home / "data" / "cache").is_dir()       # the default cache, under the working folder
