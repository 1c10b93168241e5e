"""The token cache with a vocabulary that is not in code-point order (an extended one): the
parallel encoding workers, the cache key and the id type all follow the tokenizer's own ids."""
import numpy as np
import pytest

from charrnn import CharRNNError
from charrnn.data.cache import load_ids, tokenizer_digest
from charrnn.data.corpus import Corpus
from charrnn.data.tokenizer import CharTokenizer
from conftest import make_corpus

GERMAN = "Über die Brücke gehen wir, schön und müde. Ärger? Nein, Größe!\n"


def multi_file_corpus(folder, extra=GERMAN):
    folder.mkdir()
    texts = []
    for i in range(3):
        path = make_corpus(folder / f"{i}.txt", chars=3_000, seed=i)
        texts.append(path.read_text(encoding="utf-8") + extra * (i + 1))
        path.write_text(texts[-1], encoding="utf-8")
    return "".join(texts)


def test_the_parallel_encoder_gives_the_ids_of_an_extended_vocabulary(tmp_path):
    text = multi_file_corpus(tmp_path / "corpus")
    old = CharTokenizer(make_corpus(tmp_path / "en.txt", chars=3_000).read_text("utf-8"))
    extended = old.extended(text)
    assert extended.chars != sorted(extended.chars)          # ids not in code-point order
    for workers in (1, 2):
        tokenizer, ids = load_ids(Corpus(str(tmp_path / "corpus")), extended,
                                  tmp_path / f"cache{workers}", workers=workers)
        assert tokenizer is extended
        assert ids.tolist() == extended.encode(text).tolist()
        assert extended.decode(ids) == text


def test_new_characters_go_to_the_callers_choice(tmp_path):
    text = multi_file_corpus(tmp_path / "corpus")
    old = CharTokenizer(make_corpus(tmp_path / "en.txt", chars=3_000).read_text("utf-8"))
    seen = []

    def extend(tokenizer, chars):
        seen.append(chars)
        return tokenizer.extended(chars)

    tokenizer, ids = load_ids(Corpus(str(tmp_path / "corpus")), old, tmp_path / "cache",
                              workers=2, on_new=extend)
    assert seen == [sorted(set(text) - set(old.chars))]
    assert tokenizer.chars[:len(old.chars)] == old.chars
    assert tokenizer.decode(ids) == text

    def refuse(tokenizer, chars):
        raise CharRNNError("no new characters here")

    with pytest.raises(CharRNNError, match="no new characters"):
        load_ids(Corpus(str(tmp_path / "corpus")), old, tmp_path / "cache", on_new=refuse)


def test_the_same_characters_in_another_id_order_are_another_cache_file(tmp_path):
    a, b = CharTokenizer("xyz"), CharTokenizer("zyx", in_order=True)
    assert a.chars != b.chars and sorted(a.chars) == sorted(b.chars)
    assert tokenizer_digest(a) != tokenizer_digest(b)
    (tmp_path / "t.txt").write_text("xyzzyx" * 10, encoding="utf-8")
    _, ids_a = load_ids(Corpus(str(tmp_path / "t.txt")), a, tmp_path / "cache")
    _, ids_b = load_ids(Corpus(str(tmp_path / "t.txt")), b, tmp_path / "cache")
    assert ids_a[:3].tolist() == [1, 2, 3] and ids_b[:3].tolist() == [3, 2, 1]
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_an_extension_across_256_ids_writes_a_uint16_cache(tmp_path):
    base = "".join(chr(c) for c in range(0x100, 0x100 + 255))
    old = CharTokenizer(base)
    assert old.vocab_size == 256 and old.dtype == np.uint8
    text = (base + GERMAN) * 4
    for i in range(2):
        (tmp_path / f"part{i}.txt").write_text(text, encoding="utf-8")
    tokenizer, ids = load_ids(Corpus(str(tmp_path / "part*.txt")), old, tmp_path / "cache",
                              workers=2, on_new=lambda t, chars: t.extended(chars))
    assert tokenizer.vocab_size > 256 and ids.dtype == np.uint16
    assert next((tmp_path / "cache").iterdir()).name.endswith(".uint16")
    assert tokenizer.decode(ids) == text * 2
    assert ids[:255].tolist() == list(range(1, 256))              # the old ids, unchanged
