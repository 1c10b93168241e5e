"""The README stays true: its Python snippet and its `charrnn` command lines run (on a tiny
corpus, with tiny settings where a line would train for minutes), and every option it names
exists in `--help`."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main
from conftest import make_corpus

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
# Long runs made short; names made local. (pattern, replacement)
SHORTER = [("--time-limit 30m", "--time-limit 3s --preset tiny"), ("--steps 5000", "--steps 5"),
           ("--hidden-size 512", "--hidden-size 16 --preset tiny --sample-length 20"),
           ("--length 300", "--length 40"), ("mymodel --resume", "mymodel --resume --steps 2000"), ('charrnn.preset("cpu-1m")', 'charrnn.preset("tiny")'),
           ("data/shakespeare.txt --out report.html", "corpus.txt --out report.html --max-chars 500"),
           ("-n 100", "-n 4 --length 60"),
           ("--time-limit 5m", "--steps 4 --eval-interval 2 --sample-length 20"),
           ("--resume --time-limit 10m", "--resume --steps 8 --sample-length 20"),
           ("--sample-every 500 --save-every 1000 --keep 3",
            "--sample-every 2 --save-every 2 --keep 3 --steps 6 --eval-interval 2"),
           ("step-001000", "step-000004")]
NOT_RUN = ("hf:",      # needs the Hugging Face hub, which tests never reach (test_corpus.py
                        # loads a dataset from local files instead)
           "charrnn serve")    # serves until stopped: tests/test_server.py runs it and the
                               # README's curl lines against it
OTHER_TOOLS = {"--nproc-per-node", "--standalone", "--nnodes", "--rdzv-backend",
               "--rdzv-endpoint", "--rdzv-id", "--rdzv-", "--node-rank", "--master-addr", "--master-port",
               "--quick", "--corpus"}


def blocks(language: str) -> list[str]:
    """The README's fenced blocks in ``language`` ("" for none), each fence pair read whole."""
    fenced = re.findall(r"^```(\w*)\n(.*?)^```$", README, flags=re.S | re.M)
    return [body for kind, body in fenced if kind == language]


def commands() -> list[str]:
    found = []
    for block in blocks(""):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("charrnn ") and not any(n in line for n in NOT_RUN):
                found.append(line)
    return found


def shortened(text: str) -> str:
    for pattern, replacement in SHORTER:
        text = text.replace(pattern, replacement)
    return text


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A working folder laid out as the README assumes, with tiny data."""
    monkeypatch.chdir(tmp_path)
    make_corpus(Path("corpus.txt"))
    Path("path/to").mkdir(parents=True)
    make_corpus(Path("path/to/text.txt"), chars=12_000)
    Path("books").mkdir()
    for i in range(2):
        make_corpus(Path(f"books/{i}.txt"), chars=8_000, seed=i)
    make_corpus(Path("other.txt"), chars=3_000, seed=9)
    Path("letters.txt").write_text("Liebe Grüße aus München! Schöne Tage, Ärger und Glück.\n"
                                   * 300, encoding="utf-8")      # characters new to the model
    result = CliRunner().invoke(main, ["train", "corpus.txt", "--out", "checkpoints/shakespeare",
                                       "--preset", "tiny", "--steps", "20", "--no-progress",
                                       "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    return tmp_path


def test_the_python_snippet_runs(world):
    (snippet,) = [block for block in blocks("python") if "charrnn.load" in block]
    script = shortened(snippet).replace('config.model.cell = "gru"',
                                        'config.model.cell = "gru"\nconfig.steps = 5\n'
                                        'config.progress = False')
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, cwd=world)
    assert result.returncode == 0, result.stderr
    assert (world / "checkpoints" / "mine" / "best" / "config.json").exists()


def test_every_charrnn_command_line_runs(world):
    lines = commands()
    assert len(lines) >= 6
    for line in lines:
        args = shlex.split(shortened(line))[1:]
        if args[0] == "train":
            args.append("--no-progress")
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, f"{line}\n{result.output}"


def test_every_option_the_readme_names_exists():
    helps = "".join(CliRunner().invoke(main, [command, "--help"]).output
                    for command in ("train", "sample", "eval", "info", "viz", "plot",
                                    "novelty", "serve", "export"))
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", README)) - OTHER_TOOLS
    missing = sorted(flag for flag in named if flag not in helps)
    assert not missing


def test_the_readme_lists_every_sampling_option():
    sampling = README[README.index("## Sampling"):README.index("## Training on your own text")]
    helped = set(re.findall(r"(--[a-z][a-z0-9-]+)", CliRunner().invoke(main, ["sample", "--help"])
                            .output)) - {"--help", "--prime"}
    assert sorted(flag for flag in helped if flag not in sampling) == []


def test_the_onnx_snippet_samples_from_the_exported_model(world):
    (line,) = [line for line in commands() if line.startswith("charrnn export")]
    result = CliRunner().invoke(main, shlex.split(line)[1:])
    assert result.exit_code == 0, result.output
    (snippet,) = [block for block in blocks("python") if "onnxruntime" in block]
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                            timeout=120, cwd=world)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) == len("ROMEO:") + 201
