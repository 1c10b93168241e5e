"""The CPU's bf16 support decides the precisions (charrnn/model/device.py); CHARRNN_NATIVE_BF16
stands in for another CPU, so that both kinds are tested on whichever this one is."""
import pytest
import torch

import charrnn
from charrnn import CharRNNError
from charrnn.model.device import cpu_has_native_bf16, resolve_precision

from conftest import cli

CPU = torch.device("cpu")
EMULATED = "this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 {} is emulated"


@pytest.mark.parametrize("native, auto", [("1", "bf16"), ("0", "fp32")])
def test_training_precision_auto_follows_the_cpus_bf16(monkeypatch, native, auto):
    monkeypatch.setenv("CHARRNN_NATIVE_BF16", native)
    assert cpu_has_native_bf16() is (native == "1")
    assert resolve_precision(CPU, "auto") == auto
    assert resolve_precision(CPU, "bf16") == "bf16" and resolve_precision(CPU, "fp32") == "fp32"


def test_a_bad_override_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CHARRNN_NATIVE_BF16", "yes")
    with pytest.raises(CharRNNError, match="CHARRNN_NATIVE_BF16='yes': use 1"):
        cpu_has_native_bf16()


def test_sampling_defaults_to_fp32_on_every_cpu():
    assert charrnn.SampleConfig().precision == "fp32"


@pytest.mark.parametrize("native", ["0", "1"])
def test_bf16_training_and_sampling_on_a_cpu_without_it_say_it_is_slower(
        native, corpus, tmp_path, monkeypatch, trained, capsys):
    monkeypatch.setenv("CHARRNN_NATIVE_BF16", native)
    result = cli("train", corpus, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                 "--preset", "tiny", "--steps", "2", "--precision", "bf16", "--no-progress",
                 "--sample-length", "0")
    assert result.exit_code == 0, result.output
    expected = [EMULATED.format("training")] if native == "0" else []
    assert [line for line in result.output.splitlines() if "native bf16" in line] == \
        [f"note: {line} and slower than fp32 here; --precision fp32 is faster" for line in expected]
    result = cli("sample", trained, "--length", "5", "--precision", "bf16", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert sum("native bf16" in line for line in result.output.splitlines()) == (native == "0")
    charrnn.load(trained).generate("the", length=5, precision="bf16")
    err = capsys.readouterr().err
    assert (EMULATED.format("sampling") in err) is (native == "0")
