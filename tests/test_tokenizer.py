import numpy as np
import pytest
from tokenizers import Tokenizer

from charrnn import CharRNNError
from charrnn.tokenizer import UNK_ID, CharTokenizer
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
