"""Shared fixtures: tiny corpora built here, and one tiny trained run reused by many tests."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

import charrnn
from charrnn.config import TrainConfig
from charrnn.training.presets import preset

VARIED = ("Hello, wörld!\n\tПривет, мир. 世界你好 😀👍🏽 café naïve\r\n"
          "ROMEO: But soft, what light through yonder window breaks?\n")


def make_corpus(path: Path, chars: int = 20_000, seed: int = 0) -> Path:
    """A small, learnable text: verses made of a few repeated words, with a little Unicode."""
    rng = random.Random(seed)
    words = ["to", "be", "or", "not", "the", "king", "queen", "love", "night", "day", "ROMEO:",
             "JULIET:", "café", "naïve"]
    lines = []
    while sum(len(line) + 1 for line in lines) < chars:
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(out: Path, **changes) -> TrainConfig:
    config = preset("tiny")
    config.out = str(out)
    config.cache_dir = str(out.parent / "cache")
    config.progress = False
    config.steps = 30
    config.eval_interval = 10
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.fixture
def corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "corpus.txt")


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A run folder with a tiny LSTM trained for a few dozen steps (shared: do not modify)."""
    root = tmp_path_factory.mktemp("trained")
    text = make_corpus(root / "corpus.txt")
    charrnn.train(str(text), tiny_config(root / "run", steps=40))
    return root / "run"


# ---------------------------------------------------------------------------------------------
# The one browser fixture every page test shares: Debian's headless Chromium driven through
# Selenium and Debian's chromedriver (.ci/run installs both with apt-get when missing).

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (selenium WebDriver), 1280x900, no network beyond 127.0.0.1.

    Skips, saying why, where Chromium or chromedriver is missing (run `apt-get install
    chromium chromium-driver`). Use ``browser.get(url)``, ``browser.execute_script(...)``,
    ``browser.save_screenshot(path)``; ActionChains for hovering."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--proxy-server=http://127.0.0.1:9"):
        options.add_argument(argument)     # (a proxy that leads nowhere: no network; Chromium
                                           # bypasses proxies for loopback addresses itself)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# ---------------------------------------------------------------------------------------------
# The CLI in this process, and what every error through it must look like.

def cli(*args, **kwargs):
    """``charrnn ARGS...`` in this process (click's CliRunner); arguments may be paths."""
    from click.testing import CliRunner
    from charrnn.cli.commands import main
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def one_line_error(result, match: str = "") -> str:
    """The single ``error: ...`` line of a failed CLI run (no traceback), holding ``match``."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and not [l for l in lines if not l.startswith(("error: ", "note: "))], \
        result.output
    assert match.lower() in errors[0].lower(), errors[0]
    return errors[0]
