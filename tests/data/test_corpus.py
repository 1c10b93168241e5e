import json

import pytest

from charrnn import CharRNNError
from charrnn.data.cache import load_ids, scan
from charrnn.data.corpus import Corpus, parse_hf_spec
from charrnn.data.tokenizer import CharTokenizer


def read(corpus):
    return "".join(block.text for block in corpus.blocks())


def test_folder_and_glob_read_files_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.txt").write_text("first\n")
    (tmp_path / ".hidden").write_text("never\n")
    assert read(Corpus(str(tmp_path))) == "first\nsecond\n"
    assert read(Corpus(str(tmp_path / "*.txt"))) == "first\nsecond\n"
    assert Corpus(str(tmp_path / "a.txt")).name == "a"


def test_invalid_utf8_names_file_and_byte_offset(tmp_path, monkeypatch):
    monkeypatch.setattr("charrnn.data.corpus.BLOCK_BYTES", 7)  # the bad byte lies past a block edge
    path = tmp_path / "bad.txt"
    path.write_bytes("héllo wörld".encode() + b"\xff rest")
    with pytest.raises(CharRNNError, match=r"bad.txt is not valid utf-8 at byte 13"):
        read(Corpus(str(path)))
    assert read(Corpus(str(path), errors="replace")).endswith("\ufffd rest")


def test_other_encodings_can_be_named(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café".encode("latin-1"))
    assert read(Corpus(str(path), encoding="latin-1")) == "café"


@pytest.mark.parametrize("spec, message", [("missing.txt", "does not exist"),
                                           ("empty_dir", "holds no files"),
                                           ("nothing*.txt", "no files match")])
def test_missing_inputs_are_clear_errors(tmp_path, spec, message):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CharRNNError, match=message):
        Corpus(str(tmp_path / spec))


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b" \n\t \n", "only whitespace"),
                                              (b"\x89PNG\r\n\x00\x00\x00", "binary")])
def test_empty_whitespace_and_binary_corpora_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(CharRNNError, match=message):
        scan(Corpus(str(path)))


def test_hf_spec_parsing():
    assert parse_hf_spec("hf:tiny_shakespeare") == ("tiny_shakespeare", None, "train")
    assert parse_hf_spec("hf:karpathy/tiny_shakespeare/validation") == \
        ("karpathy/tiny_shakespeare", None, "validation")
    assert parse_hf_spec("hf:wikitext:wikitext-2-raw-v1/train[:10%]") == \
        ("wikitext", "wikitext-2-raw-v1", "train[:10%]")


def test_hf_dataset_from_local_files(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    rows = [{"id": i, "text": f"line {i} ünïcode"} for i in range(50)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    text = read(Corpus(f"hf:{folder}"))
    assert text.splitlines() == [r["text"] for r in rows]
    assert Corpus(f"hf:{folder}").name == "dataset"
    with pytest.raises(CharRNNError, match="cannot load dataset"):
        read(Corpus(f"hf:{tmp_path / 'no_such_dataset'}"))


def test_cached_ids_match_the_tokenizer(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abc\nCafé 世界 😀\n" * 100)
    tokenizer, ids = load_ids(Corpus(str(path)), None, tmp_path / "cache")
    assert ids.tolist() == tokenizer.encode(path.read_text()).tolist()
    assert tokenizer.chars == sorted(set(path.read_text()))
    fixed = CharTokenizer("abc")
    _, ids = load_ids(Corpus(str(path)), fixed, tmp_path / "cache")
    assert ids[:4].tolist() == [1, 2, 3, 0]
    assert len(list((tmp_path / "cache").iterdir())) == 2
