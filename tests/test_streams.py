import numpy as np
import pytest

from charrnn import CharRNNError
from charrnn.streams import Streams, split_train_val


def test_split_takes_the_last_fraction_for_validation():
    ids = np.arange(1000)
    train, val = split_train_val(ids, 0.1)
    assert len(val) == 100 and val[0] == 900 and train[-1] == 899


def test_targets_are_inputs_shifted_by_one_and_chunks_continue_each_stream():
    ids = np.arange(1001)
    streams = Streams(ids, batch_size=4, seq_len=10)
    assert streams.stream_len == 250 and streams.num_chunks == 25
    previous = None
    for i in range(streams.num_chunks):
        inputs, targets = streams.chunk(i)
        assert inputs.shape == (4, 10)
        assert (targets == inputs + 1).all()
        if previous is not None:  # chunk i+1 starts where chunk i ended, row by row
            assert (inputs[:, 0] == previous[:, -1] + 1).all()
        previous = inputs
    assert streams.chunk(0)[0][:, 0].tolist() == [0, 250, 500, 750]


def test_ranks_take_disjoint_rows_that_make_up_the_single_process_batch():
    ids = np.arange(5000)
    whole = Streams(ids, batch_size=4, seq_len=8)
    parts = [Streams(ids, batch_size=2, seq_len=8, rank=r, world_size=2) for r in range(2)]
    for i in (0, 3):
        joined = np.concatenate([p.chunk(i)[0].numpy() for p in parts])
        assert (joined == whole.chunk(i)[0].numpy()).all()


def test_tail_chunk_covers_every_character_for_evaluation():
    streams = Streams(np.arange(106), batch_size=1, seq_len=10)
    assert streams.num_chunks == 10 and streams.num_chunks_with_tail == 11
    assert streams.chunk(10)[0].shape == (1, 5)


def test_text_shorter_than_one_batch_is_a_clear_error():
    with pytest.raises(CharRNNError, match="too short"):
        Streams(np.arange(100), batch_size=8, seq_len=32)
