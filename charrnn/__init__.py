"""charrnn: character-level recurrent networks, from corpus to samples.

The data path, one module per stage:
    corpus.py (file, folder, glob, hf:dataset) -> tokenizer.py (tokenizer.json)
    -> cache.py (token ids, numpy memmap) -> streams.py (contiguous TBPTT streams)
    -> model.py -> trainer.py (the loop; run.py builds what it needs) -> checkpoint.py
    -> sampler.py -> api.py / cli.py
Options are declared once, in config.py.

The names below load on first use (PEP 562): ``import charrnn`` itself does not import torch,
so the ``charrnn`` command (charrnn/__main__.py) can turn a Ctrl-C while torch loads into one
line instead of a traceback.
"""
from importlib import import_module

# Each public name and the module that defines it.
_EXPORTS = {
    "Model": "api", "load": "api", "plot_runs": "api", "train": "api",
    "ModelConfig": "config", "SampleConfig": "config", "SampleOptions": "config",
    "TrainConfig": "config", "CharRNNError": "errors", "OptionError": "errors",
    "CharRNN": "model", "preset": "presets", "CharTokenizer": "tokenizer",
    "__version__": "version",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value          # the next lookup is an ordinary attribute
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
