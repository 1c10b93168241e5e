"""Stage 5: the model. Embedding -> stacked recurrent layers -> linear scores over the vocabulary.

For the plain ``rnn`` cell every layer computes, with the same weights at every time step,
    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
and the output layer y_t = W_hy h_t + b_y. Training uses torch's fused nn.RNN/GRU/LSTM (cuDNN on
CUDA); sampling uses a one-step version built from the same weights (charrnn/sampler.py).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .config import ModelConfig

Hidden = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
RECURRENT = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        self.rnn = RECURRENT[config.cell](
            config.embed_size, config.hidden_size, num_layers=config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.cell == "lstm":
            self._open_forget_gates()

    def _open_forget_gates(self) -> None:
        # Forget-gate bias 1 (Jozefowicz et al., 2015): the cell remembers from the first step,
        # which makes early training markedly faster.
        size = self.config.hidden_size
        with torch.no_grad():
            for layer in range(self.config.layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[size:2 * size].fill_(1.0)
                getattr(self.rnn, f"bias_hh_l{layer}")[size:2 * size].fill_(0.0)

    def forward(self, ids: torch.Tensor, hidden: Optional[Hidden] = None
                ) -> tuple[torch.Tensor, Hidden]:
        """ids [batch, time] -> logits [batch, time, vocab], hidden state after the last step."""
        outputs, hidden = self.rnn(self.embed(ids), hidden)
        return self.head(self.drop(outputs)), hidden

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach(hidden: Optional[Hidden]) -> Optional[Hidden]:
    """Cut the graph at a chunk edge (truncated BPTT) while keeping the state's values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()
