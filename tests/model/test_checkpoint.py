import json
import os
import pickle

import pytest
import torch

import charrnn
from charrnn import CharRNNError
from charrnn.model.checkpoint import (load_checkpoint, load_trainer_state, save_checkpoint,
                                saved_train_config)


def test_run_folder_layout(trained):
    for name in ("best", "last"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(trained / name))
    assert (trained / "last" / "trainer_state.pt").is_file()
    config = json.loads((trained / "best" / "config.json").read_text())
    assert config["format"] == "charrnn" and config["model"]["cell"] == "lstm"
    assert "torch_version" in config and "val_loss" in config["metrics"]
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 40


def test_save_then_load_gives_identical_logits(trained, tmp_path):
    model, tokenizer, config = load_checkpoint(trained)
    save_checkpoint(tmp_path / "copy", model, tokenizer, {"metrics": {}})
    again, _, _ = load_checkpoint(tmp_path / "copy")
    ids = torch.randint(1, tokenizer.vocab_size, (2, 30))
    with torch.no_grad():
        assert torch.equal(model(ids)[0], again(ids)[0])


def test_resave_replaces_the_folder_and_leaves_no_temp_files(trained, tmp_path):
    model, tokenizer, _ = load_checkpoint(trained)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"metrics": {"n": 1}})
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"metrics": {"n": 2}})
    assert os.listdir(tmp_path) == ["ckpt"]
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["metrics"]["n"] == 2


def test_trainer_state_loads_without_unpickling_code(trained, tmp_path):
    state = load_trainer_state(trained / "last")
    assert state["loop"]["step"] == 40
    planted = tmp_path / "planted"

    class Evil:
        def __reduce__(self):
            return (open, (str(planted), "w"))

    folder = tmp_path / "evil"
    folder.mkdir()
    with open(folder / "trainer_state.pt", "wb") as handle:
        pickle.dump({"x": Evil()}, handle)
    with pytest.raises(CharRNNError, match="corrupt or unsafe"):
        load_trainer_state(folder)
    assert not planted.exists()


def test_missing_and_corrupt_files_are_clear_errors(trained, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(trained / "best", broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CharRNNError, match="corrupt"):
        charrnn.load(broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CharRNNError, match="missing model.safetensors"):
        charrnn.load(broken)


def test_newer_format_version_is_refused(trained, tmp_path):
    import shutil
    newer = tmp_path / "newer"
    shutil.copytree(trained / "best", newer)
    config = json.loads((newer / "config.json").read_text())
    config["format_version"] = 99
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(CharRNNError, match="upgrade charrnn"):
        charrnn.load(newer)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CharRNNError, match="not a charrnn checkpoint"):
        charrnn.load(tmp_path / "other.pt")
    with pytest.raises(CharRNNError, match="no charrnn checkpoint"):
        charrnn.load(tmp_path)


def test_checkpoint_files_follow_the_umask_like_any_file(trained, tmp_path):
    # safetensors' own save_file would create model.safetensors readable by its owner alone
    model, tokenizer, _ = load_checkpoint(trained)
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"metrics": {}})
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()}
    assert modes == {"config.json": 0o644, "model.safetensors": 0o644, "tokenizer.json": 0o644,
                     "README.md": 0o644}


def test_a_checkpoint_saved_before_the_paired_dropout_mask_keeps_the_bernoulli_one(trained,
                                                                                    tmp_path):
    # (so that --resume of an older run goes on bit for bit: tests/test_legacy_run.py)
    model, tokenizer, _ = load_checkpoint(trained)
    assert model.config.dropout_mask == "paired"
    folder = tmp_path / "old"
    save_checkpoint(folder, model, tokenizer, {"metrics": {}, "train": {"model": vars(model.config)}})
    config = json.loads((folder / "config.json").read_text())
    for saved in (config["model"], config["train"]["model"]):
        assert saved.pop("dropout_mask") == "paired"
    (folder / "config.json").write_text(json.dumps(config))
    assert load_checkpoint(folder)[0].config.dropout_mask == "bernoulli"
    assert saved_train_config(folder).model.dropout_mask == "bernoulli"
