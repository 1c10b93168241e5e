"""Two CPU processes under torchrun (gloo) train the same model as one process with the global batch."""
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import charrnn
from charrnn.api import train_run
from charrnn.data.tokenizer import CharTokenizer
from conftest import make_corpus, tiny_config

# --tensorboard where the extra is installed: only the first process writes events.
TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
# A traceback line through the package's own files starts with this (File "...).
PACKAGE_FILES = f'"{Path(charrnn.__file__).resolve().parent}{os.sep}'

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

# fp32: under bf16 autocast (the default on CPUs with native bf16) partial gradients are rounded
# to bf16 per process, and the runs agree only to about 1e-3.
COMMON = ["--preset", "tiny", "--no-progress", "--sample-length", "0", "--device", "cpu",
          "--precision", "fp32", "--eval-interval", "3"]


def torchrun(tmp_path, corpus, out, *args):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "charrnn", "train", str(corpus), "--out", str(out),
               "--cache-dir", str(tmp_path / "cache"), "--batch-size", "4", *COMMON, *args]
    # Its own session and no terminal: on a timeout the launcher and both workers are ended.
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail("torchrun timed out:\n" + stdout[-2000:] + stderr[-3000:])
    assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def max_difference(a, b):
    a, b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(a) == sorted(b)          # no "module." prefix from DDP
    return max((a[k] - b[k]).abs().max().item() for k in a)


def single_process(tmp_path, corpus, out, steps, resume=False):
    config = tiny_config(out, steps=steps, batch_size=8, eval_interval=3, device="cpu",
                         precision="fp32", resume=resume)
    config.cache_dir = str(tmp_path / "cache")
    return train_run(str(corpus), config)


def strip(lines):
    return [{k: round(v, 4) for k, v in json.loads(line).items()
             if k not in ("elapsed", "chars_per_sec")} for line in lines]


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt")
    board = ["--tensorboard"] if TENSORBOARD else []
    done = torchrun(tmp_path, corpus, tmp_path / "ddp", "--steps", "6", *board)
    assert done.stdout.count("val loss") == 1            # rank 0 alone reports
    single_process(tmp_path, corpus, tmp_path / "one", 6)

    difference = max_difference(tmp_path / "ddp" / "last", tmp_path / "one" / "last")
    print(f"max |two processes - one process| = {difference:.3g}")
    assert difference < 1e-5
    assert max_difference(tmp_path / "ddp" / "best", tmp_path / "one" / "best") < 1e-5

    # One checkpoint folder, written once: no per-rank copies, no leftovers; one events file.
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == \
        ["best", "last", "loss.png", "metrics.jsonl", *(["tensorboard"] if board else [])]
    if board:
        assert len(list((tmp_path / "ddp" / "tensorboard").iterdir())) == 1
    ddp_metrics = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    one_metrics = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in ddp_metrics] == [3, 6]
    assert strip(ddp_metrics) == strip(one_metrics)
    assert len([p for p in (tmp_path / "cache").iterdir()]) == 1
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_resume_under_torchrun_continues_the_same_run(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt")
    torchrun(tmp_path, corpus, tmp_path / "ddp", "--steps", "4")
    state = torch.load(tmp_path / "ddp" / "last" / "trainer_state.pt", weights_only=True)
    assert state["hidden"][0].shape[1] == 8              # both processes' rows are saved
    torchrun(tmp_path, corpus, tmp_path / "ddp", "--steps", "7", "--resume")
    single_process(tmp_path, corpus, tmp_path / "one", 4)
    single_process(tmp_path, corpus, tmp_path / "one", 7, resume=True)
    assert max_difference(tmp_path / "ddp" / "last", tmp_path / "one" / "last") < 1e-5
    assert json.loads((tmp_path / "ddp" / "last" / "config.json").read_text())["metrics"]["step"] == 7


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_reads_the_loss_every_few_steps(tmp_path):
    # On CUDA the loss stays on the device between reads; the metrics still average every step.
    corpus = make_corpus(tmp_path / "corpus.txt")
    config = tiny_config(tmp_path / "run", steps=60, eval_interval=30, device="cuda")
    result = train_run(str(corpus), config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [30, 60]
    assert records[1]["train_loss"] < records[0]["train_loss"] < math.log(30)
    assert result.val_loss < records[0]["train_loss"]
    assert torch.backends.cudnn.benchmark


# ---------------------------------------------------------------------------------------------
# One process fails, the others must not hang: every process stops within seconds, the failing
# one's one-line error is printed once, and the exit code is non-zero. Three members run at
# once (each a real 2-process run under torchrun).

# Rank 1 runs out of memory at its 4th training step (as an allocator does): fault injection
# through sitecustomize, which Python imports at start-up in every process that has it on the
# path; torch's public hook API raises the error.
OOM_ON_RANK_1 = """
import os
if os.environ.get("RANK") == "1":
    import torch
    steps = []

    def hook(module, args):
        if type(module).__name__ == "CharRNN" and module.training:
            steps.append(1)
            if len(steps) == 4:
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                   "can't allocate memory: you tried to allocate 1 TB")

    torch.nn.modules.module.register_module_forward_pre_hook(hook)
"""

# The API under torchrun: every process gets the failing process's message.
API_SCRIPT = """
import os
import sys
from charrnn import CharRNNError
from charrnn.api import train_config, train_run
config = train_config(sys.argv[1], sys.argv[2], "tiny", steps=3, eval_interval=3, batch_size=4,
                      cache_dir=sys.argv[3], progress=False, device="cpu", precision="fp32")
try:
    train_run(sys.argv[1], config)
except CharRNNError as err:      # one write: the two processes share the pipe
    os.write(1, f"caught {type(err).__name__}: {err}\\n".encode())
    sys.exit(3)
"""


def start_torchrun(tmp_path, name, *args, pythonpath=""):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node=2", *args], env=env, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_one_process_failing_stops_every_process(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt")
    cache = tmp_path / "cache"
    train = ["-m", "charrnn", "train", str(corpus), "--cache-dir", str(cache), "--batch-size",
             "4", *COMMON]
    blocked = {}
    for name in ("cli", "api"):      # a folder where rank 0 must write metrics.jsonl
        blocked[name] = tmp_path / name
        (blocked[name] / "metrics.jsonl").mkdir(parents=True)
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(OOM_ON_RANK_1)
    (tmp_path / "api.py").write_text(API_SCRIPT)
    started = time.monotonic()
    runs = {   # name: (process, the failing process's message, what the other one prints)
        "rank 0 cannot write metrics.jsonl mid-run (CLI)": (
            start_torchrun(tmp_path, "cli", *train, "--out", str(blocked["cli"]), "--steps", "6"),
            f"error: cannot write {blocked['cli'] / 'metrics.jsonl'}: Is a directory; free disk "
            "space or make the folder writable, then --resume", None),
        "rank 0 cannot write metrics.jsonl at the end (API)": (
            start_torchrun(tmp_path, "api", "api.py", str(corpus), str(blocked["api"]),
                           str(cache)),
            f"caught AgreedError: cannot write {blocked['api'] / 'metrics.jsonl'}: Is a "
            "directory", "caught PeerError: cannot write"),
        "rank 1 runs out of memory (CLI)": (
            start_torchrun(tmp_path, "oom", *train, "--out", str(tmp_path / "oom"), "--steps",
                           "8", pythonpath=str(tmp_path / "inject")),
            "error: out of memory: the model, the batch or the text is too large",
            "error: another process of this torchrun run stopped"),
    }
    for name, (process, failing, other) in runs.items():
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{name}: the processes hung: {process.communicate()}")
        output = stdout + stderr
        assert process.returncode != 0, output
        ours = [line for line in output.splitlines() if line.startswith(("error:", "caught"))]
        assert len([line for line in ours if line.startswith(failing)]) == 1, (name, output)
        assert all(line.startswith(failing) or other and line.startswith(other)
                   for line in ours), (name, output)
        # No traceback through the package's own files (matched by their folder, not by the name
        # "charrnn", which the clone's own folder and torchrun's path may also contain).
        assert not [line for line in output.splitlines()
                    if line.strip().startswith("File") and PACKAGE_FILES in line], output
    # Three 2-process runs side by side on this machine: far less than any collective timeout.
    assert time.monotonic() - started < 90
    assert sorted(os.listdir(blocked["cli"])) == ["metrics.jsonl"]     # the lock is gone
    assert not (tmp_path / "oom" / ".lock").exists()


FINE_TUNE = """
import os, sys
sys.path.insert(0, {tests!r})          # tests/, for conftest
from pathlib import Path
from conftest import tiny_config
from charrnn.api import train_run
from charrnn.data.tokenizer import CharTokenizer
config = tiny_config(Path({out!r}), steps=6, batch_size=4, eval_interval=3, device="cpu",
                     precision="fp32", init_from={source!r}, lr=0.005, sample_every=3,
                     save_every=2, keep=2)
config.cache_dir = {cache!r} + os.environ["RANK"]     # no cache shared between the ranks
train_run({corpus!r}, config)
"""


def test_a_fine_tune_with_new_characters_under_torchrun_equals_one_process(tmp_path):
    # Each rank has its own cache folder, as on two machines: rank 1 (not the leader) finds no
    # cache and encodes with the tokenizer rank 0 sent, whose appended characters are out of
    # code-point order. Ids that differ there would change the gradients.
    from test_finetune import make_german
    source = tmp_path / "source"
    single_process(tmp_path, make_corpus(tmp_path / "en.txt"), source, 4)
    german = make_german(tmp_path / "de.txt")
    script = tmp_path / "fine_tune.py"
    script.write_text(FINE_TUNE.format(tests=str(Path(__file__).resolve().parents[1]), out=str(tmp_path / "ddp"),
                                       source=str(source), cache=str(tmp_path / "cache-rank"),
                                       corpus=str(german)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=2", str(script)], env={**env, "OMP_NUM_THREADS": "1"},
                          cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("note: added") == 1                 # rank 0 alone says so
    assert [len(list((tmp_path / f"cache-rank{r}").iterdir())) for r in (0, 1)] == [1, 1]
    config = tiny_config(tmp_path / "one", steps=6, batch_size=8, eval_interval=3, device="cpu",
                         precision="fp32", init_from=str(source), lr=0.005, sample_every=3,
                         save_every=2, keep=2)
    config.cache_dir = str(tmp_path / "cache")
    train_run(str(german), config)
    # Samples and snapshots, written once by rank 0, as one process writes them.
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "best", "last", "loss.png", "metrics.jsonl", "samples.jsonl", "step-000004",
        "step-000006"]
    samples = [(tmp_path / run / "samples.jsonl").read_text().splitlines() for run in ("ddp", "one")]
    assert [json.loads(line)["step"] for line in samples[0]] == [3, 6]
    assert max_difference(tmp_path / "ddp" / "step-000004", tmp_path / "one" / "step-000004") < 1e-5
    tokenizers = [(tmp_path / run / "last" / "tokenizer.json").read_text() for run in ("ddp", "one")]
    assert tokenizers[0] == tokenizers[1]
    chars = CharTokenizer.load(tmp_path / "ddp" / "last" / "tokenizer.json").chars
    assert chars != sorted(chars)                                # an appended vocabulary
    assert max_difference(tmp_path / "ddp" / "last", tmp_path / "one" / "last") < 1e-5
