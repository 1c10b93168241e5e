"""Export to a web page: it opens from file:// in headless Chromium with no network, its
JavaScript step equals PyTorch's for every cell, its greedy text equals charrnn's, its int8
distributions stay within the stated total variation, its controls generate, and a model too
large for a page is a one-line error."""
import json
import time

import pytest
import torch
from selenium.webdriver.common.by import By

import charrnn
from charrnn import CharRNN, CharTokenizer, ModelConfig
from charrnn.export import web
from conftest import cli, one_line_error

TOKENIZER = CharTokenizer("abcdefghij \n<>/\"😀")
TEXT = "abc defg\nhij <b>/\"😀 " * 12


def _net(cell, layers):
    torch.manual_seed(layers)
    net = CharRNN(ModelConfig(vocab_size=TOKENIZER.vocab_size, cell=cell, layers=layers,
                              hidden_size=24, embed_size=8)).eval()
    with torch.no_grad():                  # weights large enough that the gates saturate
        for p in net.parameters():
            p.mul_(4)
    return net


def _open(browser, folder):
    browser.get((folder / "index.html").as_uri())
    return browser


@pytest.mark.parametrize("cell,layers", [("rnn", 2), ("gru", 2), ("lstm", 2)])
def test_the_javascript_step_equals_pytorch_for_every_cell(browser, tmp_path, cell, layers):
    net = _net(cell, layers)
    result = web.export_web(net, TOKENIZER, tmp_path / "site", precision="fp32", text=TEXT)
    assert result.max_tv == 0.0 and result.precision == "fp32"
    theirs = torch.tensor(_open(browser, tmp_path / "site").execute_script(
        "return charrnn.distributions(arguments[0])", TEXT), dtype=torch.float64)
    with torch.no_grad():
        ours = net(torch.as_tensor(TOKENIZER.encode(TEXT)).long()[None])[0][0, :, 1:].double()
    assert (theirs - ours.softmax(-1)).abs().max() < 1e-5


def test_greedy_text_equals_charrnn_and_int8_stays_within_the_bound(browser, trained, tmp_path):
    model = charrnn.load(trained, device="cpu")
    expected = model.generate("to be", length=200, greedy=True)
    model.export(tmp_path / "auto", format="web")           # auto: int8 for this model
    web.export_web(model.net, model.tokenizer, tmp_path / "exact", precision="fp32")
    page = _open(browser, tmp_path / "exact")
    assert page.execute_script("return charrnn.generate('to be', {greedy: true, length: 200})"
                               ) == expected
    figures = json.loads((tmp_path / "auto" / web.MARKER).read_text())["parity"]
    assert figures["precision"] == "int8" and figures["max_tv"] <= web.TV_TOLERANCE
    text = model.generate("", length=300, seed=0)
    with torch.no_grad():
        ours = model.net(torch.as_tensor(model.tokenizer.encode(text)).long()[None])[0][0, :, 1:]
    theirs = _open(browser, tmp_path / "auto").execute_script(
        "return charrnn.distributions(arguments[0])", text)
    tv = 0.5 * (torch.tensor(theirs) - ours.double().softmax(-1)).abs().sum(-1)
    assert tv.max() <= web.TV_TOLERANCE
    started = time.perf_counter()
    speed = page.execute_script("const t = performance.now(); "
                                "charrnn.generate('', {length: 3000, seed: 1}); "
                                "return 3000 / ((performance.now() - t) / 1000);")
    print(f"\nweb page: {figures['page_bytes']} bytes (int8), max TV {figures['max_tv']:.2e}, "
          f"in the browser {speed:,.0f} characters per second "
          f"({time.perf_counter() - started:.2f} s)")


def test_the_page_controls_generate_from_a_file_with_no_network(browser, trained, tmp_path):
    result = cli("export", trained, "--format", "web", "--out", tmp_path / "site")
    assert result.exit_code == 0 and "web page in int8" in result.output, result.output
    page = _open(browser, tmp_path / "site")
    texts = []
    for _ in range(2):
        for name, value in (("prime", "to be"), ("length", "120"), ("seed", "7"),
                            ("top-k", "5")):
            field = page.find_element(By.ID, name)
            field.clear()
            field.send_keys(value)
        page.find_element(By.ID, "generate").click()
        deadline = time.time() + 20
        while page.find_element(By.ID, "generate").get_attribute("disabled") and \
                time.time() < deadline:
            time.sleep(0.05)
        texts.append(page.find_element(By.ID, "out").text)
        assert "characters per second" in page.find_element(By.ID, "status").text
    assert texts[0] == texts[1] and texts[0].startswith("to be") and len(texts[0]) > 100
    page.find_element(By.ID, "prime").send_keys("Ж")          # a character it never saw
    page.find_element(By.ID, "generate").click()
    assert "never saw" in page.find_element(By.ID, "status").text
    assert page.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_a_model_too_large_for_a_page_is_a_one_line_error(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(web, "MAX_PAGE_BYTES", 10_000)
    result = cli("export", trained, "--format", "web", "--out", tmp_path / "site")
    one_line_error(result, "too large for a web page")
    assert not (tmp_path / "site").exists()


def test_a_folder_that_is_not_an_export_is_left_alone(trained, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "mine.txt").write_text("keep")
    result = cli("export", trained, "--format", "web", "--out", tmp_path / "site")
    one_line_error(result, "not an earlier charrnn web export")
    assert (tmp_path / "site" / "mine.txt").read_text() == "keep"
