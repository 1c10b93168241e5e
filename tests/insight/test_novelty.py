"""The memorisation check: exact matching statistics over a suffix array, spans, lines, the
training split only, the run's corpus found and checked, the index cached."""
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

import charrnn
from charrnn import CharRNNError, CharTokenizer
from charrnn.data.cache import scan
from charrnn.cli.commands import main
from charrnn.data.corpus import Corpus
from charrnn.insight.novelty import MIN_SPAN, Index, TrainingText, check_sample


def brute_matches(text: list, query: list) -> list:
    """For each i, the longest l with query[i:i+l] somewhere in text, by trying them all."""
    def occurs(piece):
        return any(text[s:s + len(piece)] == piece for s in range(len(text) - len(piece) + 1))
    out = []
    for i in range(len(query)):
        length = 0
        while i + length < len(query) and occurs(query[i:i + length + 1]):
            length += 1
        out.append(length)
    return out


@pytest.mark.parametrize("dtype, alphabet", [(np.uint8, 3), (np.uint8, 200), (np.uint16, 700)])
def test_matching_statistics_and_counts_equal_brute_force(dtype, alphabet):
    rng = np.random.default_rng(alphabet)
    text = rng.integers(1, 1 + min(alphabet, 4 if alphabet < 10 else alphabet), 400).astype(dtype)
    if alphabet > 256:
        text[::7] = 300 + text[::7] % 5                 # ids above 255: two bytes each
    query = np.concatenate([text[50:80], rng.integers(1, alphabet, 20), text[10:15]]).astype(dtype)
    index = Index.build(text)
    expected = brute_matches(text.tolist(), query.tolist())
    assert index.matches(query).tolist() == expected
    assert index.matches(query, reach=2).tolist() == expected     # pieces grown 2, 8, 32..
    for piece in (text[3:5], text[100:103], query[28:33]):
        expected = sum(text[s:s + len(piece)].tolist() == piece.tolist()
                       for s in range(len(text) - len(piece) + 1))
        assert index.count(piece) == expected


def test_a_copied_span_is_found_and_counted():
    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]
    rng = random.Random(0)
    corpus = " ".join(rng.choice(words) for _ in range(3000))
    tokenizer = CharTokenizer(set(corpus) | {"Z", "Q"})
    index = Index.build(tokenizer.encode(corpus))
    copied = corpus[1000:1035]                             # 35 characters, verbatim
    sample = "PRIME:" + "ZQZQ" + copied + "QZQZZQZQ"
    result = check_sample(index, tokenizer, "PRIME:", sample)
    assert result.generated == 4 + 35 + 8
    # (Z and Q are not in the corpus: the copy cannot extend into its neighbours)
    assert result.longest == 35 and result.longest_text == copied
    assert result.copied_share == pytest.approx(35 / 47)
    nothing = check_sample(index, tokenizer, "", "ZQ" * 30)
    assert nothing.longest == 0 and nothing.copied_share == 0.0 and nothing.longest_text == ""


def _run_config(path, val_fraction=0.25, **changes):
    digest = scan(Corpus(str(path))).digest
    return {"corpus": str(path), "corpus_digest": digest,
            "train": {"val_fraction": val_fraction}, **changes}


def test_only_the_training_split_counts(tmp_path):
    head = "".join(random.Random(1).choice("abcdefgh ") for _ in range(3000))
    secret = "the validation part says this only once"
    path = tmp_path / "corpus.txt"
    path.write_text(head + secret + "\n", encoding="utf-8")     # secret: in the last 25%
    tokenizer = CharTokenizer(set(head + secret + "\n"))
    training = TrainingText(_run_config(path), tokenizer, cache_dir=str(tmp_path / "cache"))
    assert training.chars == len(head + secret + "\n") - (len(head + secret + "\n") // 4)
    result = training.check([secret])
    assert result.samples[0].longest < MIN_SPAN


def test_lines_of_a_line_by_line_corpus(tmp_path):
    path = tmp_path / "names.txt"
    names = ["anna", "bob", "carla", "dora", "emil", "fritz", "greta", "hans"] * 3
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    tokenizer = CharTokenizer(set(path.read_text()))
    training = TrainingText(_run_config(path, val_fraction=0.1), tokenizer,
                            cache_dir=str(tmp_path / "cache"))
    samples = ["bob\n", "bobby\n", "anna\n", "carl\n", "carla\n", "ob\n"]
    result = training.check(samples, lines=True)
    assert [s.novel_line for s in result.samples] == [False, True, False, True, False, True]
    assert result.summary()["novel_lines"] == 3 and result.summary()["lines"] == 6
    primed = training.check(["da\ngre" + "ta\n"], prime="da\ngre", lines=True).samples[0]
    assert primed.line == "greta" and primed.novel_line is False
    assert "generated lines that are not lines of the corpus: 3 of 6 (50.0%)" in result.describe()


def test_the_corpus_is_found_checked_and_its_index_cached(tmp_path, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text("to be or not to be, that is the question\n" * 50, encoding="utf-8")
    tokenizer = CharTokenizer(set(path.read_text()))
    config = _run_config(path)
    cache = tmp_path / "cache"
    first = TrainingText(config, tokenizer, cache_dir=str(cache))
    assert first.index_seconds > 0 and first.index_path.parent == cache
    assert first.index_path.name.startswith(config["corpus_digest"])
    stamp = first.index_path.stat().st_mtime_ns
    again = TrainingText(config, tokenizer, cache_dir=str(cache))
    assert again.index_seconds == 0.0 and first.index_path.stat().st_mtime_ns == stamp
    # recorded relative to another folder: the absolute path the run also recorded is used
    monkeypatch.chdir(tmp_path)
    relative = {**config, "corpus": "elsewhere/corpus.txt", "corpus_path": str(path)}
    assert TrainingText(relative, tokenizer, cache_dir=str(cache)).spec == str(path)
    moved = {**config, "corpus": str(tmp_path / "gone.txt")}
    with pytest.raises(CharRNNError, match="gone.txt is not there .*give it with --corpus PATH"):
        TrainingText(moved, tokenizer, cache_dir=str(cache))
    assert TrainingText(moved, tokenizer, str(path), str(cache)).chars == first.chars
    with pytest.raises(CharRNNError, match="does not record the corpus"):
        TrainingText({"train": {}}, tokenizer, cache_dir=str(cache))
    path.write_text("to be or not to be, that is the question?\n" * 50, encoding="utf-8")
    with pytest.raises(CharRNNError, match="has changed since the run trained on it"):
        TrainingText(config, tokenizer, cache_dir=str(cache))
    other = TrainingText(config, tokenizer, str(path), str(cache))
    assert "is not the text the run trained on" in other.notes[0]


def test_a_run_records_its_corpus_and_the_commands_check_samples(trained, tmp_path):
    config = json.loads((trained / "best" / "config.json").read_text())
    corpus = trained.parent / "corpus.txt"
    assert config["corpus_digest"] == scan(Corpus(str(corpus))).digest
    assert config["corpus_path"] == str(corpus.resolve())
    cache = str(tmp_path / "cache")
    result = CliRunner().invoke(main, ["novelty", str(trained), "-n", "6", "--length", "60",
                                       "--seed", "1", "--cache-dir", cache])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"6 samples checked against the training split of {corpus}")
    model = charrnn.load(trained)
    texts = model.generate("", length=60, num_samples=6, seed=1)
    summary = model.novelty(texts, cache_dir=cache).summary()
    assert f"max {summary['max_longest']} characters" in result.output
    sampled = CliRunner().invoke(main, ["sample", str(trained), "-n", "2", "--length", "80",
                                        "--seed", "2", "--stop", "\\n", "--novelty",
                                        "--cache-dir", cache])
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout.count("--- sample") == 2 and "novelty" not in sampled.stdout
    lines = sampled.stderr.strip().splitlines()
    assert [line[:19] for line in lines] == ["novelty of sample 1", "novelty of sample 2"]
    assert all("its line is" in line for line in lines)        # --stop "\n": lines compared
    single = CliRunner().invoke(main, ["sample", str(trained), "--length", "40", "--novelty",
                                       "--cache-dir", cache])
    assert single.exit_code == 0 and single.stderr.startswith("novelty of sample 1: longest")
    missing = CliRunner().invoke(main, ["novelty", str(trained), "--corpus",
                                        str(tmp_path / "nope.txt"), "--cache-dir", cache])
    assert missing.exit_code == 1
    assert missing.output.startswith("error: corpus ") and "does not exist" in missing.output
