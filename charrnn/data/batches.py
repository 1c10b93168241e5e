"""Stage 4: contiguous training streams for truncated back-propagation through time.

The ids are cut into ``num_streams`` equal contiguous streams (rows). Chunk i of an epoch is
columns ``[s + i*seq_len, s + (i+1)*seq_len)`` of every row, and its targets are the same columns
one character later, so the hidden state carried from chunk i to chunk i+1 belongs to the same
text. The epoch's shift s is 0, or with ``shift_seed`` (--epoch-offset) a number in
[0, seq_len) drawn from the seed and the epoch, so that epochs do not cut the same chunks.
A process of a distributed run takes its own block of rows; the rows of all processes together
are exactly the rows of a single process with ``batch_size * world_size``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from charrnn.errors import CharRNNError


def split_train_val(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last ``val_fraction`` of the ids is validation (as char-rnn and nanoGPT do)."""
    cut = len(ids) - int(len(ids) * val_fraction)
    return ids[:cut], ids[cut:]


class Streams:
    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int,
                 rank: int = 0, world_size: int = 1, what: str = "training",
                 shift_seed: Optional[int] = None):
        num_streams = batch_size * world_size
        self.stream_len = (len(ids) - 1) // num_streams
        if self.stream_len < seq_len:
            need = num_streams * seq_len + 1
            fix = "lower --seq-len, raise --val-fraction or give more text" \
                if what == "validation" else "lower --batch-size or --seq-len, or give more text"
            raise CharRNNError(f"{what} text too short: {len(ids)} chars, but {num_streams} "
                               f"streams x seq_len {seq_len} need {need}; {fix}")
        self.seq_len, self.shift_seed = seq_len, shift_seed
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
        """Full chunks per epoch (training uses these: every step has the same shape), the
        same for every shift."""
        spare = self.seq_len - 1 if self.shift_seed is not None else 0
        return max(1, (self.stream_len - spare) // self.seq_len)

    @property
    def num_chunks_with_tail(self) -> int:
        """Chunks including a shorter last one (evaluation uses these to cover every char)."""
        return -(-self.stream_len // self.seq_len)

    def shift(self, epoch: int) -> int:
        """The columns epoch ``epoch`` skips at the start of every stream: 0 without
        ``shift_seed``, else a number in [0, seq_len) from the seed and the epoch alone (the
        same on every process and after --resume), never so large that an epoch loses a
        chunk."""
        if self.shift_seed is None:
            return 0
        room = min(self.seq_len, self.stream_len - self.num_chunks * self.seq_len + 1)
        return int(np.random.default_rng([self.shift_seed, epoch]).integers(room))

    def chunk(self, i: int, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets [batch, seq_len] int64 of chunk ``i`` of epoch ``epoch``
        (shorter for the tail chunk ``num_chunks_with_tail`` counts)."""
        start = self.shift(epoch) + i * self.seq_len
        cols = slice(start, min(start + self.seq_len, self.stream_len))
        inputs = torch.from_numpy(np.ascontiguousarray(self.inputs[:, cols]).astype(np.int64))
        targets = torch.from_numpy(np.ascontiguousarray(self.targets[:, cols]).astype(np.int64))
        return inputs, targets
