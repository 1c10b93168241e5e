"""Property-based tests (hypothesis): the tokenizer on arbitrary Unicode, TBPTT batches."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from charrnn import CharRNNError
from charrnn.data.batches import Batches, split_train_val
from charrnn.data.tokenizer import UNK_ID, CharTokenizer

QUICK = settings(max_examples=50, deadline=None)
# Any Unicode text without lone surrogates (which no UTF-8 file can hold).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@QUICK
@given(TEXT, TEXT)
def test_round_trip_on_any_text(extra, text):
    tokenizer = CharTokenizer(text + extra)
    ids = tokenizer.encode(text)
    assert len(ids) == len(text) and UNK_ID not in ids.tolist()
    assert tokenizer.decode(ids) == text
    assert ids.dtype == tokenizer.dtype


@QUICK
@given(TEXT, TEXT)
def test_fast_encode_equals_tokenizers_encode(vocab, text):
    tokenizer = CharTokenizer(vocab)
    ids = tokenizer.encode(text).tolist()
    assert ids == tokenizer.to_tokenizers().encode(text).ids
    # Characters outside the vocabulary, and only those, are <unk>.
    assert [i == UNK_ID for i in ids] == [c not in tokenizer.vocab for c in text]


@settings(max_examples=25, deadline=None)
@given(TEXT.filter(bool))
def test_saved_tokenizer_json_loads_with_the_same_ids(text):
    tokenizer = CharTokenizer(text)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        tokenizer.save(path)
        again = CharTokenizer.load(path)
        library = Tokenizer.from_file(str(path))
    assert again.vocab == tokenizer.vocab
    assert library.encode(text).ids == tokenizer.encode(text).tolist()
    assert again.decode(again.encode(text)) == text


@QUICK
@given(length=st.integers(2, 2000), batch=st.integers(1, 6), seq_len=st.integers(4, 40),
       world=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_tbptt_batches(length, batch, seq_len, world, seed):
    # Position-revealing ids: ids[p] = p. Random ids as well, for the shift property.
    positions = np.arange(length)
    ids = np.random.default_rng(seed).integers(0, 60_000, length).astype(np.uint16)
    event("too short" if (length - 1) // (batch * world) < seq_len else "batched")
    if (length - 1) // (batch * world) < seq_len:
        with pytest.raises(CharRNNError, match="too short"):
            Batches(positions, batch * world, seq_len)
        return
    whole = Batches(positions, batch * world, seq_len)
    random_batches = Batches(ids, batch * world, seq_len)
    ranks = [Batches(positions, batch, seq_len, rank=r, world_size=world) for r in range(world)]
    assert whole.num_chunks * seq_len <= whole.row_len < (whole.num_chunks + 1) * seq_len
    rows = []
    for i in range(whole.num_chunks_with_tail):
        inputs, targets = whole.chunk(i)
        full = i < whole.num_chunks
        assert inputs.shape == (batch * world, seq_len if full else whole.row_len % seq_len)
        assert (targets == inputs + 1).all()             # targets: the next character
        x, y = random_batches.chunk(i)
        where = inputs.numpy()
        assert (x.numpy() == ids[where]).all() and (y.numpy() == ids[where + 1]).all()
        # Every rank's rows, in rank order, are exactly the single-process batch.
        joined = np.concatenate([r.chunk(i)[0].numpy() for r in ranks])
        assert (joined == inputs.numpy()).all()
        rows.append(inputs.numpy())
    # Chunk i+1 continues chunk i in every row; each row is one contiguous stretch of the text,
    # and the rows follow each other.
    rows = np.concatenate(rows, axis=1)
    starts = np.arange(batch * world) * whole.row_len
    assert (rows == starts[:, None] + np.arange(whole.row_len)).all()


@QUICK
@given(length=st.integers(0, 5000), fraction=st.floats(0.01, 0.99))
def test_train_val_split_covers_the_text_once(length, fraction):
    ids = np.arange(length)
    train, val = split_train_val(ids, fraction)
    assert np.concatenate([train, val]).tolist() == ids.tolist()
    assert len(val) == int(length * fraction)
