"""The package's shape (charrnn/__init__.py states the rule): a module lives with the one stage
that uses it, imports run only downward through the stages, the CLI is a thin layer over the
API, and loading and sampling do not pull in the training stack."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "charrnn"
BENCH = PACKAGE.parent / "bench"

# The stages from the bottom up: a module may import its own folder and the folders below its
# own. "" is the top level (what every layer uses); api.py and the entry points sit above all.
STAGES = [("",), ("data",), ("model",), ("sampling",), ("insight",), ("training",),
          ("serve", "export"), ("api",), ("cli",), ("__main__",)]
ABOVE_ALL = {"charrnn.api": "api", "charrnn.__main__": "__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str:
    """The module an imported dotted name refers to: itself, or the module holding it."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str) -> set[str]:
    """The charrnn modules ``module`` imports, at any nesting level (lazy imports included)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            if base.split(".")[0] == "charrnn":
                found.update(_resolve(f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names if a.name.split(".")[0] == "charrnn")
    return found - {module}


def _stage(module: str) -> tuple[int, str]:
    """(rank, folder) of a module: the folder under charrnn/, "" for a top-level module."""
    parts = module.split(".")
    folder = ABOVE_ALL.get(module) or (parts[1] if len(parts) > 2 or
                                      (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "")
    ranks = [i for i, stage in enumerate(STAGES) if folder in stage]
    assert ranks, f"{module}: its folder {folder!r} is not a stage of STAGES"
    return ranks[0], folder


def test_every_stage_is_a_folder_and_every_folder_a_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    named = {f for stage in STAGES for f in stage} - {"", *ABOVE_ALL.values()}
    assert folders == named
    assert all(m in MODULES for m in ABOVE_ALL)


def test_the_tests_mirror_the_folders():
    """tests/data/ tests charrnn/data/ and so on; tests of the whole sit in tests/ itself."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert folders == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


def test_every_import_names_a_module_that_exists():
    for module in MODULES:
        for imported in _imports(module):
            assert imported in MODULES, f"{module} imports {imported}, which does not exist"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_only_downward(module):
    rank, folder = _stage(module)
    for imported in _imports(module):
        if imported == "charrnn":            # the package's __init__: the lazy public names
            continue
        their_rank, their_folder = _stage(imported)
        assert their_folder == folder or their_rank < rank, (
            f"{module} ({folder or 'top level'}) imports {imported} "
            f"({their_folder or 'top level'}), which is not below it")


def test_no_import_cycles():
    graph = {module: _imports(module) - {"charrnn"} for module in MODULES}

    def visit(module, path):
        assert module not in path, " -> ".join([*path, module])
        for child in graph.get(module, ()):
            visit(child, [*path, module])

    for module in graph:
        visit(module, [])


def test_the_cli_imports_the_api_and_the_errors_only():
    cli = {m for m in MODULES if m.startswith("charrnn.cli")}
    for module in cli:
        assert _imports(module) - cli <= {"charrnn.api", "charrnn.errors"}, module
    assert {"charrnn.api", "charrnn.errors"} <= _imports("charrnn.cli.commands")


def test_the_top_level_imports_no_stage():
    for module in MODULES:
        if _stage(module)[1] == "" and module != "charrnn":
            assert all(_stage(m)[1] == "" for m in _imports(module)), module


def test_loading_and_sampling_do_not_import_the_training_stack(trained):
    script = (
        "import json, sys, charrnn\n"
        f"charrnn.load({str(trained)!r}).generate('the', length=20, seed=1)\n"
        "print(json.dumps(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert {"charrnn.api", "charrnn.sampling.sampler"} <= modules
    # (torch itself loads torch.distributed and tqdm; that is fine)
    loaded = {m for m in modules if m.startswith(("charrnn.serve.", "charrnn.export."))}
    loaded |= modules & {"charrnn.training.trainer", "charrnn.training.distributed",
                         "charrnn.training.run", "charrnn.data.cache", "charrnn.insight.plots",
                         "charrnn.insight.report", "charrnn.insight.probe",
                         "datasets", "matplotlib", "pydivsufsort",
                         # serving and export load their libraries only when called
                         "fastapi", "starlette", "uvicorn", "pydantic", "onnx", "onnxruntime",
                         "onnxscript"}
    assert not loaded


def test_no_function_over_60_lines():
    for path in sorted([*PACKAGE.rglob("*.py"), *BENCH.glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, f"{path.name}: {node.name}"


def test_import_charrnn_loads_no_torch_until_a_name_is_used():
    """The package's names load on first use, so the command can catch a Ctrl-C while torch
    loads (charrnn/__main__.py); every public name still resolves, an unknown one raises."""
    script = (
        "import sys, charrnn\n"
        "assert 'torch' not in sys.modules, 'import charrnn loaded torch'\n"
        "assert all(getattr(charrnn, name) is not None for name in charrnn.__all__)\n"
        "assert 'torch' in sys.modules and charrnn.load is charrnn.api.load\n"
        "try:\n    charrnn.nothing\nexcept AttributeError:\n    print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_old_import_paths_still_work():
    """Scripts written for 0.2 (charrnn/aliases.py lists the old paths)."""
    from charrnn.aliases import OLD_PATHS
    script = (
        "import importlib, sys\n"
        "from charrnn.aliases import OLD_PATHS\n"
        "from charrnn.model import CharRNN\n"
        "from charrnn.sampler import sample_seed\n"
        "import charrnn.sampling.choice as choice\n"
        "assert sample_seed is choice.sample_seed\n"
        "from charrnn.streams import Streams\n"
        "from charrnn.data.batches import Batches\n"
        "assert Streams is Batches\n"
        "for old, new in OLD_PATHS.items():\n"
        "    o, n = importlib.import_module(old), importlib.import_module(new)\n"
        "    name = next(k for k in vars(n) if not k.startswith('_'))\n"
        "    assert getattr(o, name) is getattr(n, name), old\n"
        "print(len(OLD_PATHS))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(OLD_PATHS)
    assert all(new in MODULES and old not in MODULES for old, new in OLD_PATHS.items())
