"""The report as a user sees it, in headless Chromium (the shared ``browser`` fixture; it skips,
saying why, where Chromium is missing): text, colours, the neuron list, the top-5 guesses on
hover and on keyboard focus, clicking a unit, and nothing loaded from the network."""
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import charrnn


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
