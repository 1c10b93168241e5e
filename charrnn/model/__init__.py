"""The network and what reads or writes it.

    network.py     CharRNN: embedding -> stacked RNN/GRU/LSTM -> logits; the hidden-state helpers
    checkpoint.py  a checkpoint folder (config.json, model.safetensors, tokenizer.json), safely loaded
    card.py        the checkpoint's README.md, a Hugging Face model card
    hub.py         hf:USER/NAME[@REVISION]: a checkpoint from the Hugging Face Hub
    evaluate.py    validation loss over a text, in nats and bits per character
    device.py      cpu / cuda / mps and the precision (bf16 autocast where the CPU has it)

``from charrnn.model import CharRNN`` keeps working as it did before 0.3 (charrnn/aliases.py).
"""
from charrnn.model.network import CharRNN  # noqa: F401 (the pre-0.3 path; see charrnn/aliases.py)
