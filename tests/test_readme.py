"""The README and the docs pages stay true. Each page's `charrnn` command lines and Python
snippets run, in the order a reader meets them, on tiny data (with tiny settings where a line
would train for minutes); every option a page names exists in `--help`; every link between
pages leads to a page and a heading that exist (as the strict docs build demands)."""
import contextlib
import io
import os
import random
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main

ROOT = Path(__file__).resolve().parent.parent
# docs/reference/ is generated from the docstrings: it holds no command lines or snippets.
PAGES = ["README.md"] + sorted(f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md"))

# Long runs made short; names made local. (pattern, replacement), applied in this order.
SHORTER = [("--time-limit 30m", "--time-limit 3s --preset tiny"), ("--steps 5000", "--steps 5"),
           ("--hidden-size 512", "--hidden-size 16 --preset tiny --sample-length 20"),
           ("--length 300", "--length 40"), ("mymodel --resume", "mymodel --resume --time-limit 4s"),
           ('charrnn.preset("cpu-1m"', 'charrnn.preset("tiny"'), ("length=2000", "length=200"),
           ("--out report.html", "--out report.html --max-chars 500"),
           ("-n 100", "-n 4 --length 60"),
           ("--time-limit 5m", "--steps 4 --eval-interval 2 --sample-length 20"),
           ("--resume --time-limit 10m", "--resume --steps 8 --sample-length 20"),
           ("--sample-every 500 --save-every 1000 --keep 3",
            "--sample-every 2 --save-every 2 --keep 3 --steps 6 --eval-interval 2"),
           ("step-001000", "step-000004")]
# A Python snippet that trains gets a few steps and no progress bar, right after its preset.
PRESET_LINE = re.compile(r"^(config = charrnn\.preset\(.*\).*)$", flags=re.M)
PYTHON_STEPS = r"\1\nconfig.steps = 5\nconfig.progress = False"
NOT_RUN = ("hf:",      # needs the Hugging Face hub, which tests never reach (test_corpus.py
                        # loads a dataset from local files instead)
           "charrnn serve")    # serves until stopped: tests/serve/test_server.py runs it and the
                               # serving page's curl lines against it
# Lines that do not start with `charrnn` are not run either: `make` (sets up .venv, trains for
# minutes) and `torchrun` (several GPUs or machines; tests/training/test_distributed.py runs torchrun
# with CPU processes).
OTHER_TOOLS = {"--nproc-per-node", "--standalone", "--nnodes", "--rdzv-backend",
               "--rdzv-endpoint", "--rdzv-id", "--rdzv-", "--node-rank", "--master-addr",
               "--master-port", "--quick", "--corpus"}
COMMANDS = ("train", "sample", "eval", "info", "viz", "plot", "novelty", "serve", "export")


def read(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


def blocks(page: str) -> list[tuple[str, str]]:
    """The fenced blocks of ``page`` in order, as (language, body); language "" for none."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", read(page), flags=re.S | re.M)


def command_lines(body: str) -> list[str]:
    """The `charrnn` lines of a block, without their comments, less those NOT_RUN."""
    lines = (line.split("  #")[0].strip() for line in body.splitlines())
    return [line for line in lines
            if line.startswith("charrnn ") and not any(n in line for n in NOT_RUN)]


def shortened(text: str) -> str:
    for pattern, replacement in SHORTER:
        text = text.replace(pattern, replacement)
    return text


def play(path: Path, chars: int = 20_000, seed: int = 0) -> Path:
    """A tiny corpus in the default corpus's style: a speaker's name on its own line with a
    full stop (`Romeo.`), then a speech, then a blank line."""
    rng = random.Random(seed)
    words = ["to", "be", "or", "not", "the", "king", "queen", "love", "night", "day", "café"]
    speeches = ["To be, or not to be, that is the question.", "But soft, what light breaks?"]
    parts = []
    while sum(map(len, parts)) < chars:
        verse = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
        speech = rng.choice(speeches + [verse.capitalize() + "."])
        parts.append(f"{rng.choice(['Romeo', 'Juliet', 'Hamlet'])}.\n{speech}\n\n")
    path.write_text("".join(parts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A tiny run on data/shakespeare.txt, trained once and copied into every page's world."""
    root = tmp_path_factory.mktemp("base")
    (root / "data").mkdir()
    play(root / "data" / "shakespeare.txt")
    here = os.getcwd()
    os.chdir(root)                         # the run records its corpus as the pages name it
    try:
        result = CliRunner().invoke(main, ["train", "data/shakespeare.txt", "--out", "run",
                                           "--preset", "tiny", "--steps", "20", "--no-progress",
                                           "--sample-length", "0"])
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output
    return root


def make_world(root: Path, base: Path, page_text: str) -> None:
    """``root`` laid out as the pages assume: tiny corpora, checkpoints/shakespeare, and a
    copy of it for every other run a page reads but does not train (e.g. `charrnn plot`)."""
    shutil.copytree(base / "data", root / "data")
    shutil.copytree(base / "run", root / "checkpoints" / "shakespeare")
    trained = set(re.findall(r'(?:--out |config\.out = ")(checkpoints/[\w-]+)', page_text))
    for run in set(re.findall(r"(?<![\w/])(checkpoints/[\w-]+)", page_text)) - trained:
        if not (root / run).exists():
            shutil.copytree(base / "run", root / run)
    (root / "path" / "to").mkdir(parents=True)
    play(root / "path" / "to" / "text.txt", chars=12_000)
    (root / "books").mkdir()
    for i in range(2):
        play(root / "books" / f"{i}.txt", chars=8_000, seed=i)
    play(root / "other.txt", chars=3_000, seed=9)
    (root / "letters.txt").write_text("Liebe Grüße aus München! Schöne Tage, Ärger und Glück.\n"
                                      * 300, encoding="utf-8")   # characters new to the model


def run_command(page: str, line: str) -> None:
    """Runs one `charrnn` line, shortened, through click's runner; fails naming the page."""
    args = shlex.split(shortened(line))[1:]
    if args[0] == "train":
        args.append("--no-progress")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, f"{page}: {line}\n{result.output}"


def run_python(page: str, snippet: str) -> str:
    """Runs ``snippet`` in a namespace of its own, in this process (no second torch import);
    returns what it printed."""
    script = PRESET_LINE.sub(PYTHON_STEPS, shortened(snippet))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            exec(compile(script, f"<{page}>", "exec"), {"__name__": "__main__"})
        except Exception as error:
            pytest.fail(f"{page}: a Python snippet failed: {error!r}\n{script}")
    return printed.getvalue()


def runnable(page: str) -> bool:
    """Whether ``page`` has a command line or a Python snippet to run."""
    return any(language == "python" or command_lines(body) for language, body in blocks(page))


@pytest.mark.parametrize("page", [page for page in PAGES if runnable(page)])
def test_the_page_runs(page, base_run, tmp_path, monkeypatch):
    """Every command line and Python snippet of the page, top to bottom, in one folder."""
    make_world(tmp_path, base_run, read(page))
    monkeypatch.chdir(tmp_path)
    for language, body in blocks(page):
        if language == "python" and not any(n in body for n in NOT_RUN):
            printed = run_python(page, body)
            if "onnxruntime" in body:      # the snippet samples 200 characters after the prime
                (prime,) = re.findall(r'text = np\.random\.default_rng\(1\), "(.*)"', body)
                assert printed.startswith(prime) and len(printed) == len(prime) + 201
            if "config.out = \"checkpoints/mine\"" in body:
                assert (tmp_path / "checkpoints" / "mine" / "best" / "config.json").exists()
        elif language == "":
            for line in command_lines(body):
                run_command(page, line)


def test_the_pages_run_enough():
    """A guard against the extraction silently finding nothing."""
    lines = [line for page in PAGES for language, body in blocks(page) if language == ""
             for line in command_lines(body)]
    snippets = [body for page in PAGES for language, body in blocks(page) if language == "python"]
    assert len(lines) >= 15 and len(snippets) >= 5


@pytest.fixture(scope="module")
def helps() -> str:
    return "".join(CliRunner().invoke(main, [command, "--help"]).output for command in COMMANDS)


@pytest.mark.parametrize("page", PAGES)
def test_every_option_the_page_names_exists(page, helps):
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", read(page))) - OTHER_TOOLS
    assert sorted(flag for flag in named if flag not in helps) == []


def test_the_sampling_page_lists_every_sampling_option():
    helped = set(re.findall(r"(--[a-z][a-z0-9-]+)", CliRunner().invoke(main, ["sample", "--help"])
                            .output)) - {"--help"}
    page = read("docs/sampling.md")
    assert sorted(flag for flag in helped if flag not in page) == []


def slug(heading: str) -> str:
    """The anchor of a heading, as Python-Markdown's toc extension (mkdocs) makes it."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```$", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slug(heading) for heading in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES)
def test_every_link_leads_somewhere(page):
    here = (ROOT / page).parent
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", read(page)):
        if re.match(r"\w+:", target):
            continue                       # http:, https:, mailto: are not ours to check
        path, _, anchor = target.partition("#")
        file = (here / path).resolve() if path else ROOT / page
        if not file.exists() or (anchor and anchor not in anchors(file)):
            broken.append(target)
    assert broken == []
