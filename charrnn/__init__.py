"""charrnn: character-level recurrent networks, from corpus to samples.

The data path, one module per stage:
    corpus.py (file, folder, glob, hf:dataset) -> tokenizer.py (tokenizer.json)
    -> cache.py (token ids, numpy memmap) -> streams.py (contiguous TBPTT streams)
    -> model.py -> trainer.py (the loop; run.py builds what it needs) -> checkpoint.py
    -> sampler.py -> api.py / cli.py
Options are declared once, in config.py.
"""
from .api import Model, load, plot_runs, train
from .config import ModelConfig, SampleConfig, SampleOptions, TrainConfig
from .errors import CharRNNError, OptionError
from .model import CharRNN
from .presets import preset
from .tokenizer import CharTokenizer
from .version import __version__

__all__ = ["CharRNN", "CharRNNError", "CharTokenizer", "Model", "ModelConfig", "OptionError",
           "SampleConfig", "SampleOptions", "TrainConfig", "load", "plot_runs", "preset", "train",
           "__version__"]
