"""Fine-tuning (charrnn/training/finetune.py): --init-from starts a new run from another model's weights,
the vocabulary grows by the new corpus's characters with every old id and prediction kept,
--vocab keep maps them to <unk>, and --resume refuses them."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import charrnn
from charrnn import CharRNNError, OptionError
from charrnn.api import train_config, train_run
from charrnn.cli.commands import main
from charrnn.training.presets import FINE_TUNE_LR_SCALE, PRESETS
from charrnn.training.finetune import adapted
from conftest import make_corpus, tiny_config

GERMAN = ["Über", "die", "Brücke", "gehen", "wir,", "schön", "und", "müde.", "Ärger?", "Größe!",
          "the", "king", "love"]


def make_german(path, chars=12_000, seed=0):
    """A small text with characters an English corpus lacks (umlauts, ß, punctuation)."""
    rng = np.random.default_rng(seed)
    lines = []
    while sum(len(line) + 1 for line in lines) < chars:
        lines.append(" ".join(rng.choice(GERMAN, rng.integers(3, 9))))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny model (LSTM 1x32) trained on an English text: the run to fine-tune."""
    root = tmp_path_factory.mktemp("source")
    config = tiny_config(root / "run", steps=20)
    config.model.hidden_size = 32
    train_run(str(make_corpus(root / "en.txt")), config)
    return root / "run"


@pytest.fixture
def german(tmp_path):
    return make_german(tmp_path / "de.txt")


def fine_tune(corpus, out, source, **changes):
    config = tiny_config(out, init_from=str(source), **changes)
    return train_run(str(corpus), config)


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def test_the_grown_model_keeps_every_old_logit_and_gives_new_characters_a_small_share(source):
    model = charrnn.load(source)
    old = model.net.config.vocab_size
    grown = adapted(model.net, 0.0, old + 5).eval()
    ids = torch.as_tensor(model.tokenizer.encode("the king and the queen, love the night")
                          .astype(np.int64))[None]
    with torch.no_grad():
        before, _ = model.net(ids)
        after, _ = grown(ids)
    assert after.shape[-1] == old + 5
    torch.testing.assert_close(after[..., :old], before, rtol=0, atol=1e-6)
    # Together the new characters start below 1/n of the probability (n old characters), > 0.
    new_share = after.softmax(-1)[..., old:].sum(-1)
    assert bool((new_share > 0).all()) and bool((new_share <= 1 / (old - 1)).all())
    with pytest.raises(CharRNNError, match="cannot shrink"):
        adapted(model.net, 0.0, old - 1)


def test_a_fine_tune_extends_the_vocabulary_and_starts_a_fresh_run(source, german, tmp_path,
                                                                  capfd):
    result = fine_tune(german, tmp_path / "ft", source, steps=12, eval_interval=6)
    old = charrnn.load(source).tokenizer
    tuned = charrnn.load(tmp_path / "ft")
    added = sorted(set(german.read_text("utf-8")) - set(old.chars))
    assert tuned.tokenizer.chars == old.chars + added          # old ids kept, new appended
    note = [line for line in capfd.readouterr().err.splitlines() if "added" in line]
    assert note == [f"note: added {len(added)} characters to the vocabulary ({old.vocab_size} -> "
                    f"{old.vocab_size + len(added)} ids): " + ", ".join(map(repr, added))]
    # The shape is the source's (32 units), not the preset's (64); step count and optimizer fresh.
    assert tuned.net.config.hidden_size == 32 and tuned.net.config.vocab_size == len(old.chars) \
        + len(added) + 1
    assert result.step == 12
    state = torch.load(tmp_path / "ft" / "last" / "trainer_state.pt", weights_only=True)
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {12.0}
    steps = [json.loads(line)["step"] for line in (tmp_path / "ft" / "metrics.jsonl").open()]
    assert steps == [6, 12]
    assert tuned.generate("Größe", length=3, seed=1).startswith("Größe")   # new chars known
    with pytest.raises(CharRNNError, match="never saw"):
        charrnn.load(source).generate("Größe", length=3)


def test_a_fine_tune_starts_from_the_source_weights(source, german, tmp_path):
    fine_tune(german, tmp_path / "ft", source, steps=1, eval_interval=1, lr=1e-12)
    before, after = load_file(source / "best" / "model.safetensors"), \
        load_file(tmp_path / "ft" / "best" / "model.safetensors")
    for name, tensor in before.items():
        rows = after[name][:tensor.shape[0]] if name.startswith(("embed", "head")) else after[name]
        torch.testing.assert_close(rows, tensor, rtol=0, atol=1e-9)


def test_vocab_keep_trains_new_characters_as_unk_with_a_warning(source, german, tmp_path, capfd):
    fine_tune(german, tmp_path / "ft", source, steps=2, eval_interval=2, vocab="keep")
    old = charrnn.load(source).tokenizer
    assert charrnn.load(tmp_path / "ft").tokenizer.chars == old.chars
    added = sorted(set(german.read_text("utf-8")) - set(old.chars))
    warning = [line for line in capfd.readouterr().err.splitlines() if "<unk>" in line]
    assert warning == [f"note: --vocab keep: {len(added)} characters of the corpus are not in the "
                       "model's vocabulary and are trained as <unk>: " +
                       ", ".join(map(repr, added))]


def test_resume_refuses_a_corpus_with_new_characters(corpus, german, tmp_path):
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=4, eval_interval=2))
    before = (tmp_path / "run" / "last" / "model.safetensors").read_bytes()
    shutil.copy(german, corpus)
    with pytest.raises(CharRNNError, match=r"the corpus holds \d+ characters the run's vocabulary "
                                           r"lacks \('!', .*--init-from"):
        train_run(str(corpus), tiny_config(tmp_path / "run", steps=8, resume=True))
    assert (tmp_path / "run" / "last" / "model.safetensors").read_bytes() == before


def test_an_interrupted_fine_tune_resumes_exactly(source, german, tmp_path):
    fine_tune(german, tmp_path / "straight", source, steps=10, eval_interval=4)
    stopped = train_run(str(german), tiny_config(tmp_path / "split", init_from=str(source),
                                                 steps=10, eval_interval=4),
                        callback=lambda step, metrics: step == 6)
    assert stopped.stopped_by == "callback"
    config = train_config(str(german), str(tmp_path / "split"), resume=True,
                          cache_dir=str(tmp_path / "cache"), progress=False)
    assert config.init_from == str(source)          # the saved run records its source
    train_run(str(german), config)
    a, b = (load_file(tmp_path / run / "last" / "model.safetensors")
            for run in ("straight", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_fine_tune_defaults_to_a_lower_rate_and_a_given_one_holds(source, german, tmp_path):
    config = train_config(str(german), str(tmp_path / "ft"), "cpu-1m", init_from=str(source))
    assert config.lr == pytest.approx(PRESETS["cpu-1m"]["lr"] * FINE_TUNE_LR_SCALE)
    assert FINE_TUNE_LR_SCALE < 1
    assert train_config(str(german), str(tmp_path / "ft"), "cpu-1m", init_from=str(source),
                        lr=1e-3).lr == 1e-3


def test_shape_options_and_resume_are_refused_with_init_from(source, german, tmp_path):
    with pytest.raises(OptionError, match="hidden_size comes from the --init-from model"):
        train_config(str(german), str(tmp_path / "ft"), init_from=str(source), hidden_size=8)
    with pytest.raises(CharRNNError, match="--init-from starts a new run .* drop one of them"):
        train_config(str(german), str(tmp_path / "ft"), resume=True, init_from=str(source))
    train_config(str(german), str(tmp_path / "ft"), init_from=str(source), dropout=0.1)


@pytest.mark.parametrize("case", ["corrupt", "resume", "shape", "keep", "early-stop", "itself",
                                  "inside"])
def test_bad_fine_tune_input_is_one_line_and_writes_nothing(case, source, german, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "best" / "model.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "out"
    args = {"corrupt": ["--init-from", broken],
            "resume": ["--init-from", source, "--resume"],
            "shape": ["--init-from", source, "--layers", "2"],
            "keep": ["--init-from", source, "--save-every", "2", "--keep", "0"],
            "early-stop": ["--init-from", source, "--early-stop", "-1"],
            "itself": ["--init-from", out],
            "inside": ["--init-from", out / "best", "--overwrite"]}[case]
    if case in ("itself", "inside"):
        shutil.copytree(source, out)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, lines = cli("train", german, "--out", out, "--preset", "tiny", "--steps", "2",
                      "--no-progress", "--cache-dir", tmp_path / "cache", *args)
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), lines
    expected = {"corrupt": "model.safetensors is corrupt", "resume": "drop one of them",
                "shape": "--layers comes from the --init-from model", "keep": "--keep must be >= 1",
                "early-stop": "--early-stop must be >= 0", "itself": "is inside --out",
                "inside": "is inside --out"}[case]
    assert expected in lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_fine_tune_on_cuda_samples_and_snapshots(source, german, tmp_path):
    result = fine_tune(german, tmp_path / "ft", source, steps=8, eval_interval=4, device="cuda",
                       sample_every=4, save_every=4, keep=1)
    assert result.stopped_by == "steps" and math.isfinite(result.val_loss)
    assert sorted(p.name for p in (tmp_path / "ft").glob("step-*")) == ["step-000008"]
    samples = [json.loads(line) for line in (tmp_path / "ft" / "samples.jsonl").open()]
    assert [s["step"] for s in samples] == [4, 8]
    model = charrnn.load(tmp_path / "ft" / "step-000008", device="cpu")
    assert model.tokenizer.vocab_size > charrnn.load(source).tokenizer.vocab_size


def test_a_fine_tune_of_a_run_saved_before_the_paired_mask_draws_the_paired_one(source, german,
                                                                                tmp_path):
    # an older source reads as dropout_mask "bernoulli" (so that it resumes bit for bit); a
    # fine-tune of it is a new run, with the new run's mask
    old = tmp_path / "old"
    shutil.copytree(source, old)
    for path in old.glob("*/config.json"):
        config = json.loads(path.read_text())
        for model in (config["model"], config["train"]["model"]):
            del model["dropout_mask"]
        path.write_text(json.dumps(config))
    assert charrnn.load(old).net.config.dropout_mask == "bernoulli"
    fine_tune(german, tmp_path / "ft", old, steps=2, eval_interval=2)
    saved = json.loads((tmp_path / "ft" / "last" / "config.json").read_text())["model"]
    assert saved["dropout_mask"] == "paired"


def test_a_fine_tune_takes_its_own_regularisers_and_the_source_shape(source, german, tmp_path):
    config = train_config(str(german), str(tmp_path / "ft"), "tiny", init_from=str(source),
                          weight_drop=0.25, dropout=0.1, steps=2, eval_interval=2,
                          cache_dir=str(tmp_path / "cache"), progress=False)
    train_run(str(german), config)
    saved = json.loads((tmp_path / "ft" / "last" / "config.json").read_text())["model"]
    assert (saved["weight_drop"], saved["dropout"], saved["hidden_size"]) == (0.25, 0.1, 32)
