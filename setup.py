import ast
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def version() -> str:
    """__version__ from charrnn/version.py, the one place it is written. The file is parsed,
    not imported: importing charrnn here would need its requirements before they are installed.
    Raises RuntimeError when the file has no ``__version__ = "..."`` line."""
    tree = ast.parse((HERE / "charrnn" / "version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == \
                ["__version__"]:
            return ast.literal_eval(node.value)
    raise RuntimeError("charrnn/version.py has no __version__ = \"...\" line")


# The cut: the core is what training, sampling, evaluation, `charrnn viz`, `plot` and loss.png
# need. Each extra is the stack of one or two commands that nothing else imports, so leaving it
# out breaks only those commands, each with one line naming the extra (errors.optional_import).
# Installed (2026-12-05, torch 2.13.0+cpu, Python 3.11): the core 1,375 MB, 506 MB of it not
# torch's; the extras add 151 MB (export 124, mostly onnxruntime and onnx; serve 14; insight 13).
SERVE = ["fastapi>=0.110", "uvicorn>=0.29"]                     # charrnn serve
EXPORT = ["onnx>=1.16", "onnxscript>=0.3",                      # charrnn export: torch.onnx's
          "onnxruntime>=1.18"]                                  # exporter, the parity check
INSIGHT = ["pydivsufsort>=0.0.20"]    # the memorisation check: charrnn novelty, sample --novelty
HUB = ["huggingface_hub>=0.34,<3"]    # hf:USER/NAME models; `hf upload` shares a checkpoint
# charrnn train --tensorboard: torch.utils.tensorboard's SummaryWriter writes the events, and
# the tests read them back with TensorBoard's own reader (~55 MB with grpcio and its server).
TENSORBOARD = ["tensorboard>=2.14"]
TEST = ["pytest>=7", "hypothesis>=6", "selenium>=4.20",
        "httpx>=0.27",                # httpx: Starlette's TestClient
        "openai>=1.40", "schemathesis>=4.0"]   # serve: the OpenAI client, the contract
DOCS = ["mkdocs>=1.6", "mkdocs-material>=9.5",  # make docs (the strict build is a test)
        "mkdocstrings[python]>=0.26",
        "mkdocs-jupyter>=0.25",                 # the tutorial notebook as a page of the site
        "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"]  # tests/test_tutorial.py runs it

setup(
    name="charrnn",
    version=version(),
    description="Character-level recurrent networks: train on any text, then sample from it.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["charrnn", "charrnn.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "tokenizers>=0.15",
        "datasets>=2.14",         # hf: corpora are part of training
        "tqdm>=4.60",
        "click>=8.0",
        "numpy>=1.22",
        "safetensors>=0.4",
        "matplotlib>=3.5",       # loss.png and charrnn plot (imported only when drawing)
    ],
    package_data={"charrnn.serve": ["playground.html"], "charrnn.export": ["web_page.html"]},
    extras_require={
        "serve": SERVE,
        "export": EXPORT,
        "insight": INSIGHT,
        "hub": HUB,
        "tensorboard": TENSORBOARD,
        "all": SERVE + EXPORT + INSIGHT + HUB + TENSORBOARD,
        "docs": DOCS,
        # The tests cover every extra.
        "dev": SERVE + EXPORT + INSIGHT + HUB + TENSORBOARD + TEST + DOCS,
    },
    entry_points={"console_scripts": ["charrnn=charrnn.__main__:main"]},
)
