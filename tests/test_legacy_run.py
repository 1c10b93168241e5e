"""A run folder written by charrnn 0.1.0 (tests/fixtures/run-0.1.0, made by its make.py at
commit 7487444) still loads, samples, evaluates and resumes as it did then.

expected.json holds what 0.1.0 gave. Greedy text and the loss are compared exactly and to
1e-6; the resumed weights to 1e-5 (other CPUs round fp32 products differently; on the machine
that made the fixture they match bit for bit)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import charrnn
from charrnn.api import train_config, train_run

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def legacy_run(tmp_path) -> Path:
    shutil.copytree(FIXTURE / "run", tmp_path / "run")
    return tmp_path / "run"


def test_the_old_run_loads_samples_and_evaluates_as_before(legacy_run):
    model = charrnn.load(legacy_run, device="cpu")
    assert model.generate("the ", length=60, greedy=True) == EXPECTED["greedy"]
    text = (FIXTURE / "corpus.txt").read_text(encoding="utf-8")[:3000]
    assert model.evaluate(text)[0] == pytest.approx(EXPECTED["loss"], abs=1e-6)
    assert len(model.generate("the ", length=30, seed=1)) == 34


def test_the_old_run_resumes_to_the_same_weights(legacy_run, tmp_path):
    config = train_config(str(FIXTURE / "corpus.txt"), str(legacy_run), resume=True, steps=320,
                          cache_dir=str(tmp_path / "cache"), progress=False)
    assert config.grad_clip == 1.0        # saved under its old name, "clip"
    result = train_run(str(FIXTURE / "corpus.txt"), config)
    expected = EXPECTED["resumed"]
    assert result.step == expected["step"]
    assert result.val_loss == pytest.approx(expected["val_loss"], abs=1e-5)
    weights = load_file(legacy_run / "last" / "model.safetensors")
    sums = {name: tensor.double().sum().item() for name, tensor in sorted(weights.items())}
    assert sums.keys() == expected["weights"].keys()
    for name, value in sums.items():
        assert value == pytest.approx(expected["weights"][name], rel=1e-5, abs=1e-5), name

