"""Models on the Hugging Face Hub (hf:USER/NAME[@REVISION]), tested with no network at all:
huggingface_hub reads HF_HUB_OFFLINE, HF_HUB_CACHE and HF_ENDPOINT when imported, so each case
runs in a subprocess against a cache laid out by hand as the library lays it out."""
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

import charrnn
from charrnn.model import hub

pytest.importorskip("huggingface_hub")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"

# Runs the CLI in the child process (CliRunner), so the error lines are the CLI's own.
CHILD = textwrap.dedent("""
    import json, sys, time
    from click.testing import CliRunner
    from charrnn.cli.commands import main
    out = []
    for args in json.loads(sys.argv[1]):
        start = time.monotonic()
        result = CliRunner().invoke(main, args)
        out.append({"code": result.exit_code, "output": result.output,
                    "seconds": time.monotonic() - start})
    print(json.dumps(out))
""")


def run_cli(env_changes: dict, *commands: list, tmp_path) -> list:
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": "",
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "ds"),
           "HF_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", **env_changes}
    env.pop("HF_TOKEN")
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(commands)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def lay_cache(root, checkpoint, repo="someone/tiny"):
    """The Hugging Face cache after downloading ``repo`` at main (COMMIT) and tag v1 (OTHER)."""
    base = root / f"models--{repo.replace('/', '--')}"
    for commit in (COMMIT, OTHER):
        shutil.copytree(checkpoint, base / "snapshots" / commit)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(COMMIT)
    (base / "refs" / "v1").write_text(OTHER)
    return base


def one_line_error(result: dict, match: str) -> str:
    lines = [line for line in result["output"].splitlines() if line.strip()]
    assert result["code"] != 0 and len(lines) == 1 and lines[0].startswith("error: "), result
    assert match in lines[0], lines[0]
    return lines[0]


def test_a_cached_hub_model_loads_and_samples_offline(trained, tmp_path):
    lay_cache(tmp_path / "hub", trained / "best")
    sample = ["sample", "--prime", "to be", "--length", "40", "--greedy"]
    local, main, tagged, commit, missing = run_cli(
        {"HF_HUB_OFFLINE": "1"}, [*sample, str(trained)], [*sample, "hf:someone/tiny"],
        [*sample, "hf:someone/tiny@v1"], [*sample, f"hf:someone/tiny@{OTHER}"],
        [*sample, "hf:someone/other"], tmp_path=tmp_path)
    assert local["code"] == 0, local
    assert main["output"] == tagged["output"] == commit["output"] == local["output"], main
    one_line_error(missing, "not in the Hugging Face cache")


def test_with_no_network_a_hub_model_and_an_hf_corpus_fail_in_one_line_within_seconds(tmp_path):
    with socket.socket() as probe:            # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model, corpus = run_cli({"HF_ENDPOINT": f"http://127.0.0.1:{port}"},
                            ["sample", "hf:someone/tiny", "--length", "5"],
                            ["train", "hf:someone/data", "--steps", "2", "--out",
                             str(tmp_path / "run")], tmp_path=tmp_path)
    one_line_error(model, "not in the Hugging Face cache and the Hub cannot be reached")
    assert model["seconds"] < 10
    assert "cannot reach the Hugging Face Hub for dataset 'someone/data'" in corpus["output"]
    assert "Retrying" not in corpus["output"] and corpus["code"] != 0
    assert corpus["seconds"] < 15, corpus      # the datasets library alone retried for 26 s


def test_only_the_checkpoint_files_are_ever_downloaded(trained, tmp_path, monkeypatch):
    import huggingface_hub
    asked = {}

    def snapshot_download(repo, **kwargs):
        asked.update(kwargs, repo=repo)
        return str(trained / "best")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model = charrnn.load("hf:someone/tiny@v1", device="cpu")
    assert model.net.config.cell == "lstm"
    assert asked["repo"] == "someone/tiny" and asked["revision"] == "v1"
    assert sorted(asked["allow_patterns"]) == ["README.md", "config.json", "model.safetensors",
                                               "tokenizer.json"]      # never trainer_state.pt


@pytest.mark.parametrize("spec", ["hf:", "hf:noslash", "hf:a/b/c", "hf:a/b@", "hf:../x"])
def test_a_bad_hub_id_is_a_one_line_error(spec):
    with pytest.raises(charrnn.CharRNNError, match="bad Hub model id"):
        hub.parse_hub_id(spec)
