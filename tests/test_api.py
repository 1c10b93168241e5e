import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import charrnn
from conftest import tiny_config


def test_train_returns_a_loaded_model_that_generates_and_evaluates(corpus, tmp_path):
    model = charrnn.train(str(corpus), tiny_config(tmp_path / "run", steps=20))
    assert model.result.step == 20
    text = model.generate("the", length=50, temperature=0.8, seed=1)
    assert text.startswith("the") and len(text) == 53
    text = corpus.read_text(encoding="utf-8")[:2000]
    loss, bpc = model.evaluate(text, seq_len=len(text) - 1)    # one stream, one chunk
    ids = torch.as_tensor(model.tokenizer.encode(text).astype("int64"))
    with torch.no_grad():
        logits, _ = model.net(ids[None, :-1])
    assert loss == pytest.approx(F.cross_entropy(logits[0], ids[1:]).item(), rel=1e-5)
    assert bpc == pytest.approx(loss / math.log(2))
    assert loss < math.log(model.tokenizer.vocab_size)      # it learned something


def test_the_readme_lines_work_in_a_new_interpreter(trained):
    script = (
        "import charrnn\n"
        f"model = charrnn.load({str(trained)!r})\n"
        "print(repr(model.generate('the', length=30, temperature=0.8, seed=1)))\n"
        "texts = model.generate('the', length=30, n=8, seed=1)\n"
        "assert isinstance(texts, list) and len(texts) == 8\n"
        "loss, bpc = model.evaluate('to be or not to be the king')\n"
        "print(loss, bpc)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("'the")


def test_model_config_is_the_saved_config_under_its_old_name_and_read_only(trained):
    model = charrnn.load(trained)
    assert model.saved_config["format"] == "charrnn"
    assert model.config is model.saved_config
    with pytest.raises(AttributeError):
        model.config = {}
