"""The report as a user sees it, in headless Chromium (the shared ``browser`` fixture; it skips,
saying why, where Chromium is missing): text, colours, the neuron list, the top-5 guesses on
hover and on keyboard focus, the state behind a picked character's guesses (with an LSTM's
gates), clicking a unit, and nothing loaded from the network."""
import numpy as np
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import charrnn
from charrnn.config import ReportConfig
from charrnn.insight.probe import lstm_gates, trace
from charrnn.insight.report import write_report
from charrnn.insight.units import shown


@pytest.fixture(scope="module")
def page(trained, tmp_path_factory):
    text = (trained.parent / "corpus.txt").read_text(encoding="utf-8")[:1200] + "ЖЖ the end\n"
    path = tmp_path_factory.mktemp("report") / "report.html"
    charrnn.load(trained, device="cpu").report(text, path)
    return path, text


def _rgb(css):
    return [int(v) for v in css[css.index("(") + 1:css.index(")")].split(",")[:3]]


def test_the_report_shows_the_text_coloured_by_surprisal(browser, page, tmp_path):
    path, text = page
    browser.get(path.as_uri())
    assert browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 20_000
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('#surprisal span'), s => s.textContent)")
    assert "".join(shown).replace("\u21b5", "") == text
    bits = browser.execute_script("return D.bits")
    colours = browser.execute_script(
        "return Array.from(document.querySelectorAll('#surprisal span'),"
        " s => getComputedStyle(s).backgroundColor)")
    known = [(b, _rgb(c)) for b, c in zip(bits, colours) if b is not None]
    assert len({tuple(c) for _, c in known}) > 10                # many shades
    most, least = max(known), min(known)
    assert most[1][1] < least[1][1]          # the most surprising is redder (less green)
    assert all(c[0] == 255 for _, c in known)                    # white to red
    unknown = browser.find_elements(By.CSS_SELECTOR, "#surprisal span.unk")
    assert [s.text for s in unknown] == ["Ж", "Ж"]


def test_hovering_a_character_shows_the_top_5_guesses(browser, page):
    path, text = page
    browser.get(path.as_uri())
    spans = browser.find_elements(By.CSS_SELECTOR, "#surprisal span")
    ActionChains(browser).move_to_element(spans[10]).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed()
    rows = tip.find_elements(By.CSS_SELECTOR, "tr")
    assert len(rows) == 5
    probs = browser.execute_script("return D.top_probs.slice(50, 55)")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == \
        [f"{100 * p:.1f}%" for p in probs]
    assert f"(character 11)" in tip.text
    # keyboard: focus the text, move right, the next character's guesses show
    box = browser.find_element(By.ID, "surprisal")
    box.click()
    box.send_keys(Keys.HOME, Keys.ARROW_RIGHT)
    assert "(character 2)" in tip.text and len(tip.find_elements(By.CSS_SELECTOR, "tr")) == 5


def test_the_neuron_list_is_there_and_a_click_shows_the_unit(browser, page):
    path, _ = page
    browser.get(path.as_uri())
    buttons = browser.find_elements(By.CSS_SELECTOR, "#hits button")
    hits = browser.execute_script("return D.hits")
    assert len(buttons) == len(hits) >= 4
    assert "r = " in buttons[0].text and hits[0]["name"] in buttons[0].text
    before = browser.execute_script(
        "return Array.from(document.querySelectorAll('#neuron span'),"
        " s => s.style.background).join()")
    choice = next(i for i, h in enumerate(hits)
                  if (h["layer"], h["kind"], h["unit"]) != (hits[0]["layer"], hits[0]["kind"],
                                                             hits[0]["unit"]))
    buttons[choice].click()
    after = browser.execute_script(
        "return Array.from(document.querySelectorAll('#neuron span'),"
        " s => s.style.background).join()")
    assert after != before
    hit = hits[choice]
    assert f"{hit['kind']} state, unit {hit['unit']}" in browser.find_element(By.ID, "which").text
    assert "on" in buttons[choice].get_attribute("class")
    unit = browser.find_element(By.ID, "unit")
    unit.clear()
    unit.send_keys("640")
    assert "unit 640 does not exist: give 0 to 63" in browser.find_element(By.ID, "msg").text


def test_nothing_comes_from_the_network(browser, page):
    path, _ = page
    browser.get_log("browser")                    # drop what earlier pages logged
    browser.get(path.as_uri())
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors


STRIPS = ["hidden h", "cell tanh(c)", "input gate", "forget gate", "cell candidate",
          "output gate"]


def _behind(trained, text):
    """What the state view should show before each character: (the states [T + 1] that made
    each guess, h then tanh(c); the gates i, f, g, o of those steps [T]), layer 0."""
    model = charrnn.load(trained, device="cpu")
    ids = model.tokenizer.encode(text).astype("int64")
    reading = trace(model.net, ids, int(model.tokenizer.encode("\n")[0]))
    states = [np.concatenate([shown(reading.start)[kind][0][None], shown(reading.states)[kind][0]])
              for kind in ("h", "c")]
    return states, [lstm_gates(model.net, reading)[gate][0] for gate in "ifgo"]


def _pixel(browser, row, unit):
    return browser.execute_script(
        "return Array.from(rows[arguments[0]].canvas.getContext('2d')"
        ".getImageData(arguments[1], 0, 1, 1).data).slice(0, 3)",
        row, unit)


def test_picking_a_character_shows_the_state_that_made_its_guess(browser, page, trained):
    path, text = page
    browser.get(path.as_uri())
    (hidden, cell), gates = _behind(trained, text)
    assert browser.execute_script("return rows.map(r => r.label)") == STRIPS

    def shows(t):        # the guesses for character t came from the state before it
        strips = browser.execute_script("return stateShown")
        for got, want in zip(strips, [hidden[t], cell[t]] + [gate[t] for gate in gates]):
            assert np.abs(np.array(got, dtype=float) - want).max() <= 1 / 255 + 1e-9

    box = browser.find_element(By.ID, "surprisal")
    box.find_elements(By.TAG_NAME, "span")[13].click()
    said = browser.find_element(By.ID, "stateat").text
    assert text[12:14] == "ue" and "for e (character 14)" in said
    assert "after reading u (character 13)" in said
    shows(13)
    box.send_keys(Keys.ARROW_RIGHT)                       # the keyboard walks through it
    assert "(character 15)" in browser.find_element(By.ID, "stateat").text
    shows(14)
    box.send_keys(Keys.HOME)
    assert "after the start character" in browser.find_element(By.ID, "stateat").text
    shows(0)
    # each unit drawn in its colour: red for a positive h, green for an open gate
    strips = browser.execute_script("return stateShown")
    unit = int(np.argmax(strips[0]))
    level = round(255 * (1 - 0.75 * strips[0][unit]))
    assert abs(_pixel(browser, 0, unit)[1] - level) <= 1 and _pixel(browser, 0, unit)[0] == 255
    red, green, blue = _pixel(browser, 3, int(np.argmax(strips[3])))      # forget gate
    assert green > red and green > blue


def test_a_unit_of_the_strip_says_its_value_and_opens_in_the_neuron_view(browser, page):
    path, _ = page
    browser.get(path.as_uri())
    box = browser.find_element(By.ID, "surprisal")
    box.find_elements(By.TAG_NAME, "span")[5].click()
    canvases = browser.find_elements(By.CSS_SELECTOR, "#strips canvas")
    cw = browser.execute_script("return cw")          # CSS pixels a unit
    width = canvases[3].size["width"]                   # with its border
    assert browser.execute_script("return arguments[0].clientWidth", canvases[3]) == 64 * cw
    ActionChains(browser).move_to_element_with_offset(
        canvases[3], 7 * cw + cw // 2 - width // 2, 0).perform()
    value = browser.execute_script("return stateShown[3][7]")
    assert browser.find_element(By.ID, "stateunit").text == \
        f"layer 0, forget gate, unit 7: {value:.3f}"
    ActionChains(browser).move_to_element_with_offset(
        canvases[0], 9 * cw + cw // 2 - width // 2, 0).click().perform()
    assert "layer 0, hidden state, unit 9" in browser.find_element(By.ID, "which").text


def test_units_whose_gates_are_not_stored_are_grey(browser, trained, tmp_path):
    model = charrnn.load(trained, device="cpu")
    text = (trained.parent / "corpus.txt").read_text(encoding="utf-8")[:300]
    budget = (len(text) + 1) * 2 * 64 + 4 * len(text) * 2             # gates of 2 units
    summary = write_report(model.net, model.tokenizer, text, tmp_path / "r.html",
                           ReportConfig(unit=33, state="cell"), max_values=budget)
    assert summary.gate_units == 2
    browser.get((tmp_path / "r.html").as_uri())
    browser.find_element(By.ID, "surprisal").find_elements(By.TAG_NAME, "span")[3].click()
    grey = [_pixel(browser, 3, unit) == [221, 221, 221] for unit in range(64)]
    assert grey.count(False) == 2 and not grey[33]       # the unit the neuron view opens on
    assert not any(_pixel(browser, 0, unit) == [221, 221, 221] for unit in range(64))
    assert "stored for 2 of the 64 units" in browser.find_element(By.TAG_NAME, "body").text
