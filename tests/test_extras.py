"""The optional extras of setup.py: what each holds, one version, and what happens without them.

A command whose extra is missing fails with one line naming the install command and exit 1;
training and sampling need none of them. Each case runs charrnn in a subprocess whose
sitecustomize makes the extra's packages unimportable, as if they were not installed."""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import charrnn
from charrnn.errors import CharRNNError, optional_import
from conftest import make_corpus

ROOT = Path(__file__).resolve().parent.parent

# Each extra and the import names of its packages (the same as their distribution names).
EXTRAS = {"serve": ("fastapi", "uvicorn"), "export": ("onnx", "onnxscript", "onnxruntime"),
          "insight": ("pydivsufsort",), "hub": ("huggingface_hub",),
          "tensorboard": ("tensorboard",)}
EVERY = tuple(name for names in EXTRAS.values() for name in names)
NOVELTY = "the memorisation check (charrnn novelty, charrnn sample --novelty)"

# Every finder of sys.meta_path (the path finder, the editable install's) is wrapped so that it
# does not find the packages named in CHARRNN_BLOCK: importing them raises ModuleNotFoundError
# naming the top-level package, and importlib.util.find_spec returns None, as when missing.
NOT_INSTALLED = """
import os
import sys

BLOCKED = set(os.environ["CHARRNN_BLOCK"].split(","))


class Hidden:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)


sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
"""


def missing(extra: str, user: str) -> str:
    """The error for a missing extra, as the API raises it (the CLI adds "error: ")."""
    return f"{user} needs the {extra} extra: pip install -e '.[{extra}]'"


def start_without(folder: Path, blocked, *args) -> subprocess.Popen:
    """``python ARGS...`` started in ``folder`` (made here) with ``blocked`` unimportable."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(NOT_INSTALLED)
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "CHARRNN_BLOCK": ",".join(blocked),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``process``; killed after two minutes."""
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return process.returncode, stdout, stderr


def run_without(folder: Path, blocked, *args) -> tuple[int, str, str]:
    return finish(start_without(folder, blocked, *args))


# Each command, the extra it needs, and how the error names it.
COMMANDS = {
    "serve": ("serve", "charrnn serve", ["serve", "{run}", "--port", "0"]),
    "export": ("export", "charrnn export", ["export", "{run}", "--out", "exported"]),
    "novelty": ("insight", NOVELTY, ["novelty", "{run}", "--num-samples", "2", "--cache-dir",
                                     "cache"]),
    "sample --novelty": ("insight", NOVELTY, ["sample", "{run}", "--novelty", "--cache-dir",
                                              "cache"]),
    "train --tensorboard": ("tensorboard", "--tensorboard",
                            ["train", "{corpus}", "--tensorboard", "--steps", "2", "--out", "run",
                             "--cache-dir", "cache", "--device", "cpu"]),
}


def test_a_command_without_its_extra_is_one_line(trained, tmp_path):
    # All started at once: each spends seconds loading torch before it gets to the error.
    corpus = trained.parent / "corpus.txt"
    started = {name: start_without(tmp_path / name.replace(" ", ""), EXTRAS[extra], "-m",
                                   "charrnn", *(a.format(run=trained, corpus=corpus)
                                                for a in args))
               for name, (extra, _, args) in COMMANDS.items()}
    for name, process in started.items():
        extra, user = COMMANDS[name][:2]
        assert finish(process) == (1, "", f"error: {missing(extra, user)}\n"), name
        assert sorted(p.name for p in (tmp_path / name.replace(" ", "")).iterdir()) == \
            ["sitecustomize.py"], name       # no export, cache or run: it failed before any work


# The API raises the same error, also when only one package of the extra is missing: uvicorn
# alone (FastAPI imports; the check in server.py), onnxruntime alone (torch.onnx could run).
API_SCRIPT = """
import sys
import charrnn
from charrnn import api

model = charrnn.load(sys.argv[1])
calls = {"serve": lambda: api.serve(sys.argv[1]), "export": lambda: model.export("exported"),
         "novelty": lambda: model.novelty("to be", cache_dir="cache")}
for name, call in calls.items():
    try:
        call()
        print(f"{name}: no error")
    except charrnn.CharRNNError as err:
        print(f"{name}: {err}")
"""


def test_the_api_raises_the_same_error(trained, tmp_path):
    (tmp_path / "api.py").write_text(API_SCRIPT)
    code, stdout, stderr = run_without(tmp_path, ["uvicorn", "onnxruntime", "pydivsufsort"],
                                       "api.py", trained)
    assert code == 0, stderr
    assert stdout.splitlines() == [f"serve: {missing('serve', 'charrnn serve')}",
                                   f"export: {missing('export', 'charrnn export')}",
                                   f"novelty: {missing('insight', NOVELTY)}"]
    assert not (tmp_path / "exported").exists() and not (tmp_path / "cache").exists()


def test_training_and_sampling_need_no_extra(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt", chars=3000)
    code, _, stderr = run_without(tmp_path, EVERY, "-m", "charrnn", "train", corpus, "--preset",
                                  "tiny", "--steps", "3", "--eval-interval", "3", "--out", "run",
                                  "--device", "cpu", "--cache-dir", "cache")
    assert code == 0, stderr
    assert (tmp_path / "run" / "loss.png").is_file()     # matplotlib is in the core
    code, stdout, stderr = run_without(tmp_path, EVERY, "-m", "charrnn", "sample", "run",
                                       "--prime", "to", "--length", "20", "--seed", "1")
    assert code == 0, stderr
    assert stdout.startswith("to") and len(stdout) >= 20


def test_optional_import_catches_only_the_missing_package(tmp_path, monkeypatch):
    assert optional_import("json", "serve", "charrnn serve").dumps(1) == "1"
    with pytest.raises(CharRNNError) as caught:
        optional_import("charrnn_no_such_package.sub", "serve", "charrnn serve")
    assert str(caught.value) == missing("serve", "charrnn serve")
    # A package that is there but whose own dependency is missing: its error, unchanged.
    (tmp_path / "charrnn_broken_package.py").write_text("import charrnn_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        optional_import("charrnn_broken_package", "serve", "charrnn serve")
    assert caught.value.name == "charrnn_no_such_dependency"


def test_setup_py_cuts_the_extras_and_reads_the_version(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, timeout=60)
    metadata = importlib.metadata.PathDistribution(tmp_path / "charrnn.egg-info")
    wanted = {}     # extra ("": the core) -> the names of the distributions it requires
    for requirement in metadata.requires:          # 'onnx>=1.16; extra == "export"'
        extra = re.search(r'extra == "(\w+)"', requirement)
        name = re.match(r"[\w.-]+", requirement).group()
        wanted.setdefault(extra.group(1) if extra else "", set()).add(name)
    assert {"torch", "datasets", "matplotlib"} <= wanted[""]
    assert not wanted[""] & set(EVERY)
    for extra, names in EXTRAS.items():
        assert wanted[extra] == set(names), extra
    assert wanted["all"] == set(EVERY) and wanted["dev"] > wanted["all"]
    assert metadata.version == charrnn.__version__


def test_the_installed_version_is_the_package_version():
    assert importlib.metadata.version("charrnn") == charrnn.__version__
