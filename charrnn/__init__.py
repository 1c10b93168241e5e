"""charrnn: character-level recurrent networks, from corpus to samples.

The data path, one module per stage:
    corpus.py (file, folder, glob, hf:dataset) -> tokenizer.py (tokenizer.json)
    -> cache.py (token ids, numpy memmap) -> streams.py (contiguous TBPTT streams)
    -> model.py -> trainer.py -> checkpoint.py -> sampler.py -> api.py / cli.py
"""
__version__ = "0.1.0"

from .api import Model, load, train  # noqa: E402
from .config import ModelConfig, TrainConfig, preset  # noqa: E402
from .errors import CharRNNError  # noqa: E402
from .model import CharRNN  # noqa: E402
from .sampler import SampleOptions  # noqa: E402
from .tokenizer import CharTokenizer  # noqa: E402

__all__ = ["CharRNN", "CharRNNError", "CharTokenizer", "Model", "ModelConfig", "SampleOptions",
           "TrainConfig", "load", "preset", "train"]
