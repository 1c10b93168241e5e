import numpy as np
import pytest
from tokenizers import Tokenizer

from charrnn import CharRNNError
from charrnn.data.tokenizer import UNK_ID, CharTokenizer
from conftest import VARIED


def test_vocab_is_code_point_order_with_unk_first():
    tokenizer = CharTokenizer("cab\n")
    assert tokenizer.chars == ["\n", "a", "b", "c"]
    assert tokenizer.vocab["<unk>"] == UNK_ID == 0
    assert [tokenizer.vocab[c] for c in tokenizer.chars] == [1, 2, 3, 4]
    assert tokenizer.vocab_size == 5


@pytest.mark.parametrize("text", [
    "plain ASCII text, with punctuation!?", "accents: café naïve Æsir", "Cyrillic: Привет, мир",
    "CJK: 世界你好", "emoji: 😀👍🏽🇫🇷", "new\nlines\r\nand\ttabs  ", VARIED])
def test_fast_encode_equals_tokenizers_encode(text):
    tokenizer = CharTokenizer(VARIED + "plain ASCII text,!?Æsir🇫")
    expected = tokenizer.to_tokenizers().encode(text).ids
    assert tokenizer.encode(text).tolist() == expected
    assert len(expected) == len(text)


def test_unknown_characters_map_to_unk_in_both_paths():
    tokenizer = CharTokenizer("abc")
    text = "abz\U0010FFFFc<unk>"
    ids = tokenizer.encode(text).tolist()
    assert ids == tokenizer.to_tokenizers().encode(text).ids
    assert ids[:5] == [1, 2, UNK_ID, UNK_ID, 3]
    assert tokenizer.unknown_chars(text) == sorted(set("z\U0010FFFF<unk>>"))


def test_saved_file_loads_in_tokenizers_with_same_ids(tmp_path):
    tokenizer = CharTokenizer(VARIED)
    tokenizer.save(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(VARIED).ids == tokenizer.encode(VARIED).tolist()
    assert hf.decode(hf.encode(VARIED).ids) == VARIED
    again = CharTokenizer.load(tmp_path / "tokenizer.json")
    assert again.vocab == tokenizer.vocab
    assert again.decode(again.encode(VARIED)) == VARIED


def test_id_dtype_grows_with_vocabulary():
    assert CharTokenizer("ab").dtype == np.uint8
    assert CharTokenizer(chr(i) for i in range(0x4E00, 0x4E00 + 300)).dtype == np.uint16


def test_loading_a_foreign_tokenizer_is_a_clear_error(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"type": "BPE", "vocab": {"ab": 0}}}')
    with pytest.raises(CharRNNError, match="not a charrnn character tokenizer"):
        CharTokenizer.load(path)


def test_an_extended_vocabulary_keeps_every_old_id_and_appends_the_new_characters():
    old = CharTokenizer("cab\n")
    new = old.extended("zäb\n")
    assert new.chars == ["\n", "a", "b", "c", "z", "ä"]         # appended in code-point order
    assert all(new.vocab[c] == i for c, i in old.vocab.items())
    assert new.encode("abzä").tolist() == [2, 3, 5, 6]
    assert new.encode("abzä").tolist() == new.to_tokenizers().encode("abzä").ids
    assert old.extended("abc").chars == old.chars


def test_the_id_order_is_saved_and_read_back_by_every_reader(tmp_path):
    # Ids out of code-point order: only the saved order gives them back.
    tokenizer = CharTokenizer("zyx", in_order=True)
    assert tokenizer.vocab == {"<unk>": 0, "z": 1, "y": 2, "x": 3}
    tokenizer.save(tmp_path / "tokenizer.json")
    again = CharTokenizer.load(tmp_path / "tokenizer.json")
    assert again.chars == ["z", "y", "x"]
    assert again.encode("xyz").tolist() == [3, 2, 1]
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("xyz").ids == [3, 2, 1]


def test_a_character_given_twice_in_order_is_refused():
    with pytest.raises(CharRNNError, match="each character once"):
        CharTokenizer("aba", in_order=True)


def test_a_tokenizer_file_with_a_gap_in_its_ids_is_refused(tmp_path):
    tokenizer = CharTokenizer("ab")
    tokenizer.save(tmp_path / "tokenizer.json")
    text = (tmp_path / "tokenizer.json").read_text(encoding="utf-8")
    (tmp_path / "tokenizer.json").write_text(text.replace('"b": 2', '"b": 7'), encoding="utf-8")
    with pytest.raises(CharRNNError, match="the ids are not 0, 1, 2"):
        CharTokenizer.load(tmp_path / "tokenizer.json")


def test_extending_across_256_ids_widens_the_id_type():
    old = CharTokenizer(chr(c) for c in range(0x100, 0x100 + 255))      # 256 ids with <unk>
    new = old.extended("äöü")
    assert (old.dtype, new.dtype) == (np.uint8, np.uint16)
    assert new.encode("ü" + chr(0x100)).tolist() == [258, 1]


def test_listed_chars_names_the_first_few_and_counts_the_rest():
    from charrnn.data.tokenizer import listed_chars
    assert listed_chars(["é", "\n"]) == "'é', '\\n'"
    assert listed_chars(list("abcd"), most=2) == "'a', 'b' and 2 more"
