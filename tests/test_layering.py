"""The package's shape: the CLI is a thin layer over the API, loading and sampling do not pull
in the training stack, and every module and function stays short enough to read."""
import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "charrnn"
BENCH = PACKAGE.parent / "bench"


def _imports(path: Path) -> set[str]:
    """The charrnn modules ``path`` imports (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([f"charrnn.{node.module}"] if node.module else
                         [f"charrnn.{alias.name}" for alias in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("charrnn"))
    return found


CLI = {"charrnn.cli", "charrnn.cli_base", "charrnn.cli_tools"}


def test_the_cli_imports_the_api_and_the_errors_only():
    for module in CLI:
        path = PACKAGE / f"{module.split('.')[1]}.py"
        assert _imports(path) - CLI <= {"charrnn.api", "charrnn.errors"}, path.name
    assert {"charrnn.api", "charrnn.errors"} <= _imports(PACKAGE / "cli.py")


def test_loading_and_sampling_do_not_import_the_training_stack(trained):
    script = (
        "import json, sys, charrnn\n"
        f"charrnn.load({str(trained)!r}).generate('the', length=20, seed=1)\n"
        "print(json.dumps(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert {"charrnn.api", "charrnn.sampler"} <= modules
    # (torch itself loads torch.distributed and tqdm; that is fine)
    loaded = modules & {"charrnn.trainer", "charrnn.distributed", "charrnn.run",
                        "charrnn.cache", "datasets", "matplotlib", "pydivsufsort",
                        "charrnn.plots", "charrnn.report", "charrnn.probe",
                        # serving and export load their libraries only when called
                        "charrnn.serve", "charrnn.server", "charrnn.export", "fastapi",
                        "starlette", "uvicorn", "pydantic", "onnx", "onnxruntime", "onnxscript"}
    assert not loaded


def test_no_module_over_300_lines_and_no_function_over_60():
    for path in sorted([*PACKAGE.glob("*.py"), *BENCH.glob("*.py")]):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 300, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, f"{path.name}: {node.name}"


def test_no_import_cycles():
    graph = {f"charrnn.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py")}

    def visit(module, path):
        assert module not in path, " -> ".join([*path, module])
        for child in graph.get(module, ()):
            visit(child, [*path, module])

    for module in graph:
        if module != "charrnn.__init__":
            visit(module, [])


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
