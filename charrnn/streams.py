"""Stage 4: contiguous training streams for truncated back-propagation through time.

The ids are cut into ``num_streams`` equal contiguous streams (rows). Chunk i of an epoch is
columns ``[i*seq_len, (i+1)*seq_len)`` of every row, and its targets are the same columns one
character later, so the hidden state carried from chunk i to chunk i+1 belongs to the same text.
A process of a distributed run takes its own block of rows; the rows of all processes together
are exactly the rows of a single process with ``batch_size * world_size``.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import CharRNNError


def split_train_val(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last ``val_fraction`` of the ids is validation (as char-rnn and nanoGPT do)."""
    cut = len(ids) - int(len(ids) * val_fraction)
    return ids[:cut], ids[cut:]


class Streams:
    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int,
                 rank: int = 0, world_size: int = 1, what: str = "training"):
        num_streams = batch_size * world_size
        self.stream_len = (len(ids) - 1) // num_streams
        if self.stream_len < seq_len:
            need = num_streams * seq_len + 1
            fix = "lower --seq-len, raise --val-fraction or give more text" \
                if what == "validation" else "lower --batch-size or --seq-len, or give more text"
            raise CharRNNError(f"{what} text too short: {len(ids)} chars, but {num_streams} "
                               f"streams x seq_len {seq_len} need {need}; {fix}")
        self.seq_len = seq_len
        used = num_streams * self.stream_len
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        # Views on the (possibly memory-mapped) ids: nothing is read until a chunk is taken.
        self.inputs = ids[:used].reshape(num_streams, self.stream_len)[rows]
        self.targets = ids[1:used + 1].reshape(num_streams, self.stream_len)[rows]

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_chunks(self) -> int:
        """Full chunks per epoch (training uses these: every step has the same shape)."""
        return self.stream_len // self.seq_len

    @property
    def num_chunks_with_tail(self) -> int:
        """Chunks including a shorter last one (evaluation uses these to cover every char)."""
        return -(-self.stream_len // self.seq_len)

    def chunk(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        cols = slice(i * self.seq_len, min((i + 1) * self.seq_len, self.stream_len))
        inputs = torch.from_numpy(np.ascontiguousarray(self.inputs[:, cols]).astype(np.int64))
        targets = torch.from_numpy(np.ascontiguousarray(self.targets[:, cols]).astype(np.int64))
        return inputs, targets
