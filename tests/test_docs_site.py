"""The documentation site (`make docs`): the strict mkdocs build of docs/ and the API reference,
that the build really is strict, that the reference covers every module and public name, and
the built pages as a reader sees them in headless Chromium (the shared ``browser`` fixture; it
skips, saying why, where Chromium is missing)."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

import charrnn

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
DIRECTIVE = re.compile(r"^::: *(\S+)", re.MULTILINE)


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``, run from the repository root (the
    config's paths are relative to it); the log is in ``stderr``. Not ``--quiet``: it hides the
    warnings from the count that makes a strict build fail."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--config-file", str(config), "--site-dir", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as `make docs` builds it, into a temporary folder."""
    site = tmp_path_factory.mktemp("site")
    result = mkdocs_build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def _pages() -> list[Path]:
    """The site's pages: docs/'s Markdown and its notebooks (the tutorial, by mkdocs-jupyter)."""
    return [p.relative_to(ROOT / "docs") for pattern in ("*.md", "*.ipynb")
            for p in (ROOT / "docs").rglob(pattern) if ".ipynb_checkpoints" not in p.parts]


def test_the_strict_build_makes_every_page(site):
    pages = [p.with_suffix(".html") for p in _pages()]
    assert Path("index.html") in pages and Path("reference/api.html") in pages
    assert [p for p in pages if not (site / p).is_file()] == []


def test_a_broken_link_or_an_unknown_reference_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Broken\n\nSee [the missing page](missing.md) and "
                                   "[`charrnn.no_such_name`][].\n", encoding="utf-8")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: {docs}\nnav:\n  - index.md\n",
                      encoding="utf-8")
    result = mkdocs_build(config, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "missing.md" in output and "charrnn.no_such_name" in output, output


def _modules() -> set[str]:
    """Every module of the package, by its dotted name (a package by its folder's name)."""
    names = set()
    for path in (ROOT / "charrnn").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_reference_documents_every_module_and_only_modules_that_exist():
    named = set()
    for page in REFERENCE.glob("*.md"):
        named |= set(DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    modules = _modules()
    assert sorted(modules - named) == [], "modules the reference leaves out"
    assert sorted(named - modules) == [], "directives that name no module"


def test_the_reference_index_lists_the_public_names_of_charrnn():
    text = (REFERENCE / "index.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| \[`charrnn\.(\w+)`\]", text, re.MULTILINE)
    assert listed == sorted(charrnn.__all__)


def test_every_page_is_in_the_nav():
    # mkdocs.yml's nav, read as text: each "- Title: page.md" or "- page.md" line.
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s*- (?:[^:\n]+: )?([\w/.-]+\.(?:md|ipynb))\s*$", config,
                         re.MULTILINE))
    pages = {p.as_posix() for p in _pages()}
    assert nav == pages


def _first_words(function) -> str:
    """The first line of a function's docstring, up to its first code span (the page shows the
    same words; a double-backtick span shows as code, without the backticks)."""
    return inspect.getdoc(function).splitlines()[0].split("``")[0].strip()


def test_the_built_pages_in_a_browser(browser, site, tmp_path):
    browser.get((site / "index.html").as_uri())
    first = (ROOT / "docs" / "index.md").read_text(encoding="utf-8").splitlines()[0]
    assert browser.find_element(By.TAG_NAME, "h1").text.strip() == first.lstrip("# ").strip()
    nav = browser.execute_script(
        "return Array.from(document.querySelectorAll('nav.md-nav--primary a.md-nav__link'),"
        " a => a.getAttribute('href'))")
    for page in ("training.html", "sampling.html", "python-api.html", "reference/index.html",
                 "reference/api.html", "reference/sampling.html"):
        assert page in nav, nav
    assert browser.save_screenshot(str(tmp_path / "index.png"))

    browser.get((site / "reference" / "api.html").as_uri())
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Python API")
    heading = browser.find_element(By.ID, "charrnn.api.load")
    assert "load" in heading.text
    body = heading.find_element(
        By.XPATH, "following-sibling::div[contains(@class, 'doc-contents')][1]")
    assert _first_words(charrnn.load) in body.text
    assert browser.find_element(By.ID, "charrnn.api.Model").is_displayed()
    # Everything the page refers to is in the site itself: it works offline.
    used = browser.execute_script(
        "return Array.from(document.querySelectorAll('link[href], script[src], img[src]'),"
        " e => e.href || e.src)")
    assert used and [url for url in used if not url.startswith("file://")] == [], used


def test_the_tutorial_page_shows_its_outputs(site):
    # The notebook's stored outputs (a learner's run), pictures inline: nothing is executed
    # by the build, and nothing is fetched by the page.
    page = (site / "tutorial" / "rnn-to-lstm.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') >= 6
    assert "largest difference from CharRNN.step" in page
    assert not re.findall(r'<(?:script|img|link)[^>]+(?:src|href)="https?://', page)
    assert (site / "tutorial" / "rnn-to-lstm.ipynb").is_file()     # the download link's target


@pytest.fixture(scope="module")
def docstrings():
    """docs/reference/docstrings.py, the griffe extension the reference is built with."""
    spec = importlib.util.spec_from_file_location("docstrings", REFERENCE / "docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_brackets_in_docstrings_are_escaped_outside_code(docstrings):
    text = "use hf:NAME[:CONFIG][/SPLIT], ``x[0][1]`` and `y[a][b]`\n    z[i][j] in a block"
    assert docstrings.escape_brackets(text) == \
        "use hf:NAME[:CONFIG]\\[/SPLIT], ``x[0][1]`` and `y[a][b]`\n    z[i][j] in a block"


def test_a_docstring_keeps_the_indentation_beyond_its_code(docstrings):
    # A package docstring whose lines after the first are all an indented table, and a method's
    # docstring with an indented block: inspect.cleandoc would flatten the first.
    source = ('"""The package.\n\n    a.py    one\n    b.py    two\n"""\n'
              'class A:\n    def f(self):\n        """One.\n\n            code\n        """\n')
    tree = ast.parse(source)
    package, method = tree.body[0], tree.body[1].body[0].body[0]
    assert docstrings.dedent_by(package.value.value, package.col_offset) == \
        "The package.\n\n    a.py    one\n    b.py    two"
    assert docstrings.dedent_by(method.value.value, method.col_offset) == "One.\n\n    code"


def test_a_package_table_is_a_code_block_on_its_page(site):
    page = (site / "reference" / "data.html").read_text(encoding="utf-8")
    blocks = re.findall(r"<pre>(.*?)</pre>", page, re.DOTALL)
    assert any("corpus.py" in block and "batches.py" in block for block in blocks), blocks
