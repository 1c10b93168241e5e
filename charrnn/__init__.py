"""charrnn: character-level recurrent networks, from corpus to samples.

The data path, one folder per stage:

    data/       corpus -> tokenizer (tokenizer.json) -> cached ids (memmap) -> TBPTT batches
    model/      the network (CharRNN), checkpoints, evaluation, the device
    sampling/   generate and stream, the batching engine, the choice of the next character
    insight/    the HTML report, probes, hidden units, plots, the memorisation check
    training/   the loop (trainer.py) and what only training uses (presets, schedule, saving)
    serve/      charrnn serve: the HTTP app and server        } optional extras:
    export/     charrnn export: ONNX                          } pip install -e '.[all]'
    cli/        the charrnn command, a thin layer over api.py

At the top sits what every layer uses: options.py (how an option is declared), config.py (every
option, declared once, in typed dataclasses), errors.py, files.py (atomic writes), version.py;
and api.py, the Python API, which uses every layer.

The rule that places a module: it lives with the one stage that uses it; what two stages use
moves down to the lower one. Imports run only downward, in this order (tests/test_layering.py):
top-level modules, data, model, sampling, insight, training, serve and export, api.py, cli.

The names below load on first use (PEP 562): ``import charrnn`` itself does not import torch,
so the ``charrnn`` command (charrnn/__main__.py) can turn a Ctrl-C while torch loads into one
line instead of a traceback.
"""
from importlib import import_module

from charrnn import aliases

aliases.install()

# Each public name and the module that defines it.
_EXPORTS = {
    "Model": "api", "load": "api", "plot_runs": "api", "train": "api",
    "ModelConfig": "config", "SampleConfig": "config", "SampleOptions": "config",
    "TrainConfig": "config", "CharRNNError": "errors", "OptionError": "errors",
    "CharRNN": "model.network", "preset": "training.presets", "CharTokenizer": "data.tokenizer",
    "__version__": "version",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
    value = getattr(import_module(f"charrnn.{_EXPORTS[name]}"), name)
    globals()[name] = value          # the next lookup is an ordinary attribute
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
