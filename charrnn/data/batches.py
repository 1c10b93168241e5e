"""Stage 4: the batches of truncated back-propagation through time.

The ids are cut into ``num_rows`` equal contiguous rows, each a stretch of text read in order.
Chunk i of an epoch is columns ``[s + i*seq_len, s + (i+1)*seq_len)`` of every row, and its
targets are the same columns one character later, so the hidden state carried from chunk i to
chunk i+1 belongs to the same text. The epoch's shift s is 0, or with ``shift_seed``
(--epoch-offset) a number in [0, seq_len) drawn from the seed and the epoch, so that epochs do
not cut the same chunks.
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


class Batches:
    """The ids as ``batch_size * world_size`` contiguous rows, read in chunks of ``seq_len``
    columns: this process's rows (``rank``) are ``inputs`` and ``targets`` [batch_size,
    row_len], views on ``ids``. ``what`` names the text in errors; ``shift_seed`` is
    --epoch-offset's seed (None: every epoch starts at column 0). Raises CharRNNError when the
    text is too short for one chunk per row."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int,
                 rank: int = 0, world_size: int = 1, what: str = "training",
                 shift_seed: Optional[int] = None):
        num_rows = batch_size * world_size
        self.row_len = (len(ids) - 1) // num_rows
        if self.row_len < seq_len:
            need = num_rows * seq_len + 1
            fix = "lower --seq-len, raise --val-fraction or give more text" \
                if what == "validation" else "lower --batch-size or --seq-len, or give more text"
            raise CharRNNError(f"{what} text too short: {len(ids)} chars, but {num_rows} "
                               f"streams x seq_len {seq_len} need {need}; {fix}")
        self.seq_len, self.shift_seed = seq_len, shift_seed
        used = num_rows * self.row_len
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        # Views on the (possibly memory-mapped) ids: nothing is read until a chunk is taken.
        self.inputs = ids[:used].reshape(num_rows, self.row_len)[rows]
        self.targets = ids[1:used + 1].reshape(num_rows, self.row_len)[rows]

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_chunks(self) -> int:
        """Full chunks per epoch (training uses these: every step has the same shape), the
        same for every shift."""
        spare = self.seq_len - 1 if self.shift_seed is not None else 0
        return max(1, (self.row_len - spare) // self.seq_len)

    @property
    def num_chunks_with_tail(self) -> int:
        """Chunks including a shorter last one (evaluation uses these to cover every char)."""
        return -(-self.row_len // self.seq_len)

    def shift(self, epoch: int) -> int:
        """The columns epoch ``epoch`` skips at the start of every row: 0 without
        ``shift_seed``, else a number in [0, seq_len) from the seed and the epoch alone (the
        same on every process and after --resume), never so large that an epoch loses a
        chunk."""
        if self.shift_seed is None:
            return 0
        room = min(self.seq_len, self.row_len - self.num_chunks * self.seq_len + 1)
        return int(np.random.default_rng([self.shift_seed, epoch]).integers(room))

    def chunk(self, i: int, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets [batch, seq_len] int64 of chunk ``i`` of epoch ``epoch``
        (shorter for the tail chunk ``num_chunks_with_tail`` counts)."""
        start = self.shift(epoch) + i * self.seq_len
        cols = slice(start, min(start + self.seq_len, self.row_len))
        inputs = torch.from_numpy(np.ascontiguousarray(self.inputs[:, cols]).astype(np.int64))
        targets = torch.from_numpy(np.ascontiguousarray(self.targets[:, cols]).astype(np.int64))
        return inputs, targets
