"""Stages 1-4 of the data path: text in, token ids out, cut into training batches.

    corpus.py      a file, folder, glob or hf:dataset, read in blocks (any encoding)
    tokenizer.py   characters <-> ids, saved as tokenizer.json
    cache.py       the ids of a whole corpus, encoded once into a numpy memmap (data/cache)
    batches.py     Batches: the ids cut into contiguous rows for truncated back-propagation
                   through time
"""
