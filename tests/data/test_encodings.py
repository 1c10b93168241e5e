"""Reading text the way it was written: byte-order marks are encoding signatures (dropped, per
file), UTF-16/32 files are read as such or named in the error, old-Mac line ends get a note;
`train` and `eval` read alike. Each member through the CLI and through the API."""
import codecs

import pytest

import charrnn
from charrnn import CharRNNError
from charrnn.api import train_run
from charrnn.data.cache import load_ids, scan
from charrnn.data.corpus import Corpus
from conftest import cli, one_line_error, tiny_config

LINES = ["Мой дядя самых честных правил, когда не в шутку занемог,",
         "он уважать себя заставил и лучше выдумать не мог.",
         "ROMEO: But soft, what light through yonder window breaks?"]
TEXT = "\n".join(LINES * 30) + "\n"          # about 5,000 characters

# How text files come to be written: (bytes of TEXT, the --encoding to give, or None)
WRITTEN = {
    "utf-8 with a BOM (Windows Notepad)": (codecs.BOM_UTF8 + TEXT.encode(), None),
    "utf-16-le with a BOM (Notepad's 'Unicode')": (codecs.BOM_UTF16_LE +
                                                  TEXT.encode("utf-16-le"), None),
    "utf-16-be with a BOM": (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), None),
    "utf-32 with a BOM": (codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"), None),
    "utf-16-le without a BOM, named": (TEXT.encode("utf-16-le"), "utf-16-le"),
    "utf-16 with a BOM, named utf-16": (TEXT.encode("utf-16"), "utf-16"),
}
TRAIN = ["--preset", "tiny", "--no-progress", "--sample-length", "0", "--steps", "2"]


def _file(tmp_path, name):
    data, encoding = WRITTEN[name]
    path = tmp_path / "text.txt"
    path.write_bytes(data)
    return path, ["--encoding", encoding] if encoding else []


@pytest.mark.parametrize("name", list(WRITTEN))
def test_text_is_read_as_written_through_the_cli(tmp_path, name):
    path, encoding = _file(tmp_path, name)
    result = cli("train", path, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                 *encoding, *TRAIN)
    assert result.exit_code == 0, result.output
    model = charrnn.load(tmp_path / "run")
    assert model.tokenizer.chars == sorted(set(TEXT))           # no U+FEFF, no NUL
    evaluated = cli("eval", tmp_path / "run", path, "--cache-dir", tmp_path / "cache")
    assert evaluated.exit_code == 0, evaluated.output
    assert f"over {len(TEXT)} characters" in evaluated.output   # eval reads it as training did
    assert f"loss {model.evaluate(TEXT)[0]:.4f} nats/char" in evaluated.output


@pytest.mark.parametrize("name", list(WRITTEN))
def test_text_is_read_as_written_through_the_api(tmp_path, name):
    path, encoding = _file(tmp_path, name)
    config = tiny_config(tmp_path / "run", steps=2)
    if encoding:
        config.encoding = encoding[1]
    train_run(str(path), config)
    model = charrnn.load(tmp_path / "run")
    assert model.tokenizer.chars == sorted(set(TEXT))
    tokenizer, ids = load_ids(Corpus(str(path), config.encoding), model.tokenizer,
                              tmp_path / "cache")
    assert ids.tolist() == tokenizer.encode(TEXT).tolist()       # the cache holds the same text
    result = model.evaluate_file(str(path), cache_dir=str(tmp_path / "cache"))
    assert result.num_chars == len(TEXT) and result.loss == model.evaluate(TEXT)[0]


def test_each_file_of_a_folder_drops_its_own_mark(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_bytes(codecs.BOM_UTF8 + TEXT.encode())
    (folder / "b.txt").write_bytes(TEXT.encode("utf-16"))
    (folder / "c.txt").write_bytes(TEXT.encode())
    assert "".join(block.text for block in Corpus(str(folder)).blocks()) == TEXT * 3
    result = cli("train", folder, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                 *TRAIN)
    assert result.exit_code == 0, result.output
    assert "\ufeff" not in charrnn.load(tmp_path / "run").tokenizer.chars


# (bytes, --encoding or None, what the one-line error says)
MISREAD = {
    "utf-16-le without a BOM": (TEXT.encode("utf-16-le"), None,
                                "looks like UTF-16-LE text without a byte-order mark, not utf-8: "
                                "pass --encoding utf-16-le"),
    "utf-16-be without a BOM": (TEXT.encode("utf-16-be"), None, "pass --encoding utf-16-be"),
    "utf-32-le without a BOM": (TEXT.encode("utf-32-le"), None, "pass --encoding utf-32-le"),
    "utf-16 with a BOM named latin-1": (TEXT.encode("utf-16"), "latin-1",
                                        "starts with a UTF-16 byte-order mark but was to be read "
                                        "as latin-1: pass --encoding utf-16"),
    "utf-8 with a BOM named cp1252": (codecs.BOM_UTF8 + TEXT.encode(), "cp1252",
                                      "pass --encoding utf-8"),
    "utf-16-le named utf-16-be": (TEXT.encode("utf-16-le"), "utf-16-be",
                                  "pass --encoding utf-16-le"),
    "binary": (bytes(range(256)) * 40, None, "looks like a binary file"),
}


@pytest.mark.parametrize("name", list(MISREAD))
def test_misread_text_is_named_through_the_cli(tmp_path, name):
    data, encoding, message = MISREAD[name]
    path = tmp_path / "text.txt"
    path.write_bytes(data)
    named = ["--encoding", encoding] if encoding else []
    one_line_error(cli("train", path, "--out", tmp_path / "run", "--cache-dir",
                       tmp_path / "cache", *named, *TRAIN), message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", list(MISREAD))
def test_misread_text_is_named_through_the_api(trained, tmp_path, name):
    data, encoding, message = MISREAD[name]
    path = tmp_path / "text.txt"
    path.write_bytes(data)
    config = tiny_config(tmp_path / "run", steps=2)
    config.encoding = encoding or config.encoding
    with pytest.raises(CharRNNError, match=message.replace("(", r"\(")):
        train_run(str(path), config)
    with pytest.raises(CharRNNError, match=message.replace("(", r"\(")):
        charrnn.load(trained).evaluate_file(str(path), encoding,
                                            cache_dir=str(tmp_path / "cache"))
    one_line_error(cli("eval", trained, path, "--cache-dir", tmp_path / "cache",
                       *(["--encoding", encoding] if encoding else [])), message)


# Line ends: (files of the corpus, whether a note is due, what it names)
ENDINGS = {
    "one old-Mac file": ({"a.txt": "\r"}, "a.txt: lines end in CR alone"),
    "two of three files": ({"a.txt": "\r", "b.txt": "\n", "c.txt": "\r"},
                           "2 files of the corpus (first"),
    "windows CRLF": ({"a.txt": "\r\n"}, None),
    "unix LF": ({"a.txt": "\n"}, None),
}


def _corpus(tmp_path, files):
    folder = tmp_path / "texts"
    folder.mkdir()
    for name, end in files.items():
        (folder / name).write_bytes(end.join(LINES * 30).encode() + end.encode())
    return folder if len(files) > 1 else folder / "a.txt"


@pytest.mark.parametrize("name", list(ENDINGS))
def test_old_mac_line_ends_get_a_note_through_the_cli(tmp_path, name):
    files, note = ENDINGS[name]
    corpus = _corpus(tmp_path, files)
    result = cli("train", corpus, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                 *TRAIN)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    if note is None:
        assert not notes
        return
    assert len(notes) == 1 and note in notes[0] and "tr '\\r' '\\n'" in notes[0], notes
    assert "samples print each line over the last one" in notes[0]
    evaluated = cli("eval", tmp_path / "run", corpus, "--cache-dir", tmp_path / "cache")
    assert evaluated.exit_code == 0 and note in evaluated.output


@pytest.mark.parametrize("name", list(ENDINGS))
def test_old_mac_line_ends_get_a_note_through_the_api(tmp_path, capsys, name):
    files, note = ENDINGS[name]
    corpus = _corpus(tmp_path, files)
    scan(Corpus(str(corpus)))
    err = capsys.readouterr().err
    assert (note in err) if note else "note:" not in err, err
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=2))
    chars = charrnn.load(tmp_path / "run").tokenizer.chars
    assert ("\r" in chars) == ("\r" in "".join(files.values()))   # trained as written


def test_the_cache_key_holds_how_the_text_was_read(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes("café, naïve – “quoted”\n".encode("cp1252") * 200)
    as_cp1252, as_latin1 = scan(Corpus(str(path), "cp1252")), scan(Corpus(str(path), "latin-1"))
    assert as_cp1252.digest != as_latin1.digest                   # same bytes, other text
    assert scan(Corpus(str(path), "cp1252")).digest == as_cp1252.digest
    marked = tmp_path / "marked.txt"
    marked.write_bytes(codecs.BOM_UTF8 + TEXT.encode())
    tokenizer, ids = load_ids(Corpus(str(marked)), None, tmp_path / "cache")
    again, cached = load_ids(Corpus(str(marked)), None, tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 1 and cached.tolist() == ids.tolist()
    assert tokenizer.decode(ids) == TEXT
