import numpy as np
import pytest

from charrnn import CharRNNError
from charrnn.data.batches import Batches, split_train_val


def test_split_takes_the_last_fraction_for_validation():
    ids = np.arange(1000)
    train, val = split_train_val(ids, 0.1)
    assert len(val) == 100 and val[0] == 900 and train[-1] == 899


def test_targets_are_inputs_shifted_by_one_and_chunks_continue_each_row():
    ids = np.arange(1001)
    batches = Batches(ids, batch_size=4, seq_len=10)
    assert batches.row_len == 250 and batches.num_chunks == 25
    previous = None
    for i in range(batches.num_chunks):
        inputs, targets = batches.chunk(i)
        assert inputs.shape == (4, 10)
        assert (targets == inputs + 1).all()
        if previous is not None:  # chunk i+1 starts where chunk i ended, row by row
            assert (inputs[:, 0] == previous[:, -1] + 1).all()
        previous = inputs
    assert batches.chunk(0)[0][:, 0].tolist() == [0, 250, 500, 750]


def test_ranks_take_disjoint_rows_that_make_up_the_single_process_batch():
    ids = np.arange(5000)
    whole = Batches(ids, batch_size=4, seq_len=8)
    parts = [Batches(ids, batch_size=2, seq_len=8, rank=r, world_size=2) for r in range(2)]
    for i in (0, 3):
        joined = np.concatenate([p.chunk(i)[0].numpy() for p in parts])
        assert (joined == whole.chunk(i)[0].numpy()).all()


def test_tail_chunk_covers_every_character_for_evaluation():
    batches = Batches(np.arange(106), batch_size=1, seq_len=10)
    assert batches.num_chunks == 10 and batches.num_chunks_with_tail == 11
    assert batches.chunk(10)[0].shape == (1, 5)


def test_text_shorter_than_one_batch_is_a_clear_error():
    with pytest.raises(CharRNNError, match="too short"):
        Batches(np.arange(100), batch_size=8, seq_len=32)


def test_without_a_shift_seed_every_epoch_cuts_the_same_chunks():
    batches = Batches(np.arange(1001), batch_size=4, seq_len=10)
    assert {batches.shift(epoch) for epoch in range(20)} == {0}
    assert (batches.chunk(3, epoch=7)[0] == batches.chunk(3)[0]).all()


@pytest.mark.parametrize("length", [1001, 1037, 83])
def test_epoch_offset_shifts_each_epoch_by_a_seeded_amount_under_seq_len(length):
    ids = np.arange(length)
    batches = Batches(ids, batch_size=4, seq_len=10, shift_seed=5)
    row_len = (length - 1) // 4
    assert batches.num_chunks == max(1, (row_len - 9) // 10)
    shifts = [batches.shift(epoch) for epoch in range(40)]
    assert all(0 <= s < 10 for s in shifts) and len(set(shifts)) > 1
    assert shifts == [Batches(ids, 4, 10, shift_seed=5).shift(e) for e in range(40)]
    assert shifts != [Batches(ids, 4, 10, shift_seed=6).shift(e) for e in range(40)]
    for epoch, shift in enumerate(shifts[:8]):
        for i in range(batches.num_chunks):     # every chunk whole, the row read in order
            inputs, targets = batches.chunk(i, epoch)
            assert inputs.shape == (4, 10) and (targets == inputs + 1).all()
            assert inputs[:, 0].tolist() == [r * row_len + shift + i * 10 for r in range(4)]


def test_ranks_agree_on_the_shift():
    ids = np.arange(5000)
    whole = Batches(ids, batch_size=4, seq_len=8, shift_seed=1)
    parts = [Batches(ids, 2, 8, rank=r, world_size=2, shift_seed=1) for r in range(2)]
    for epoch in range(5):
        joined = np.concatenate([p.chunk(2, epoch)[0].numpy() for p in parts])
        assert (joined == whole.chunk(2, epoch)[0].numpy()).all()
