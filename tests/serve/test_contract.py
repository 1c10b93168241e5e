"""The OpenAPI document is the contract: schemathesis, with every one of its checks, against a
real server of a tiny model (a small --max-length, --max-prime and --max-stop, an API key), a
bounded number of examples per operation. Nothing is excluded: the vocabulary is stated as a
pattern, so every prime the schema allows is one the model can read.

Not in the document, so not tried here: POST /v1/chat/completions (an error by design, tested
in tests/serve/test_openai.py), HEAD /health and HEAD / (tests/serve/test_guard.py), the page
(/) and /docs."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from live import serve_live  # noqa: F401 (a fixture)

KEY = "contract-key-0123456789"
EXAMPLES = 15


def _schemathesis():
    found = Path(sys.executable).parent / "st"
    return str(found) if found.exists() else shutil.which("st")


def test_the_server_keeps_to_its_openapi_document(serve_live, tmp_path):
    command = _schemathesis()
    if command is None:
        pytest.skip("schemathesis is not installed: pip install -e '.[dev]'")
    with serve_live(max_length=20, max_prime=40, max_stop=5, max_batch=8,
                    api_key=KEY) as (_, url):
        result = subprocess.run(
            [command, "run", f"{url}/openapi.json", "--checks", "all", "--workers", "1",
             "--max-examples", str(EXAMPLES), "--seed", "1", "--no-color",
             "--header", f"Authorization: Bearer {KEY}"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    tail = result.stdout[-6000:]
    assert result.returncode == 0, tail
    assert " passed" in tail and "failure" not in tail.split("SUMMARY")[-1].lower(), tail
