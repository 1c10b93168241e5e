"""The model card: every checkpoint's README.md, read back by huggingface_hub's own parser."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from charrnn.model import card
from charrnn.model.checkpoint import complete_cards, load_checkpoint, save_checkpoint

huggingface_hub = pytest.importorskip("huggingface_hub")


def test_every_checkpoint_has_a_card_the_hub_reads(trained):
    for name in ("best", "last"):
        text = (trained / name / "README.md").read_text(encoding="utf-8")
        config = json.loads((trained / name / "config.json").read_text())
        data = huggingface_hub.ModelCard.load(trained / name / "README.md").data
        assert data.library_name == "charrnn" and data.pipeline_tag == "text-generation"
        assert {"charrnn", "lstm", "character-level"} <= set(data.tags)
        figures = {r.metric_type: r.metric_value for r in data.eval_results}
        assert figures == {"bpc": round(config["metrics"]["val_bpc"], 5),
                           "loss": round(config["metrics"]["val_loss"], 5)}
        assert data.eval_results[0].dataset_name == "corpus.txt"
        assert data.model_name == trained.name
        for part in ("## Corpus", config["corpus_digest"], "## Training", "## A sample",
                     'charrnn.load("hf:USER/NAME")', "## Limitations", "20,"):
            assert part in text, part
        assert str(trained.parent) not in text and "/tmp" not in text   # no absolute path


def test_a_save_reuses_the_given_sample_and_fences_it_safely(trained, tmp_path):
    model, tokenizer, config = load_checkpoint(trained)
    sample = {"step": 7, "prime": "to", "temperature": 0.8, "seed": 3,
              "text": "to be ```` or not\n---\nto be"}
    save_checkpoint(tmp_path / "run" / "step-000007", model, tokenizer, config, sample=sample)
    text = (tmp_path / "run" / "step-000007" / "README.md").read_text(encoding="utf-8")
    assert "`````text\nto be ```` or not\n---\nto be\n`````" in text
    assert "(step 7, temperature 0.8, seed 3)" in text
    data = huggingface_hub.ModelCard.load(tmp_path / "run" / "step-000007" / "README.md").data
    assert data.model_name == "run"


def test_cards_are_completed_after_the_run_without_touching_the_random_state(trained, tmp_path):
    # The trainer completed the cards of a run without --sample-every ...
    assert all(card.NO_SAMPLE not in (trained / n / "README.md").read_text() and
               "seed 0" in (trained / n / "README.md").read_text() for n in ("best", "last"))
    # ... and does so for any checkpoint saved without a sample.
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for name in ("best", "last"):
        model, tokenizer, config = load_checkpoint(run / name)
        save_checkpoint(run / name, model, tokenizer, config)
    assert card.NO_SAMPLE in (run / "best" / "README.md").read_text()
    torch.manual_seed(5)
    before = torch.get_rng_state()
    complete_cards(run)
    assert torch.equal(before, torch.get_rng_state())
    texts = [(run / n / "README.md").read_text(encoding="utf-8") for n in ("best", "last")]
    assert all(card.NO_SAMPLE not in t and "seed 0" in t for t in texts)
    first = texts[0]
    complete_cards(run)                         # done once: a card with a sample stays
    assert (run / "best" / "README.md").read_text(encoding="utf-8") == first
    net, tokenizer, _ = load_checkpoint(run)
    assert card.draw_sample(net, tokenizer, length=50) == card.draw_sample(net, tokenizer,
                                                                           length=50)


def test_the_card_of_an_hf_corpus_names_the_dataset(trained):
    _, _, config = load_checkpoint(trained)
    config = {**config, "corpus": "hf:karpathy/tiny_shakespeare/train", "corpus_path": None}
    text = card.card_text(config, None, "tiny")
    assert "datasets:\n- \"karpathy/tiny_shakespeare\"" in text
    assert "`karpathy/tiny_shakespeare/train`" in text


def test_hf_upload_is_there_to_share_a_folder():
    hf = shutil.which("hf", path=str(__import__("pathlib").Path(sys.executable).parent)) \
        or shutil.which("hf")
    if hf is None:
        pytest.skip("the hf command (huggingface_hub's CLI) is not installed")
    result = subprocess.run([hf, "upload", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "repo_id" in result.stdout.lower().replace("-", "_")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "mingru", "minlstm"])
def test_the_card_counts_the_weights_the_network_has(cell):
    import dataclasses
    from charrnn.config import ModelConfig
    from charrnn.model.network import CharRNN
    shape = ModelConfig(cell=cell, layers=2, hidden_size=32, embed_size=8, vocab_size=20)
    built = sum(p.numel() for p in CharRNN(shape).parameters())
    assert card.num_params(dataclasses.asdict(shape)) == built > 0
