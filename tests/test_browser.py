"""The shared browser fixture works: it renders a local page, runs its script and hovers."""
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By


def test_the_browser_renders_a_local_page_and_hovers(browser, tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<p id='t' onmouseover=\"this.textContent='hovered'\">still</p>"
                    "<img src='http://example.invalid/x.png' id='remote'>", encoding="utf-8")
    browser.get(page.as_uri())
    target = browser.find_element(By.ID, "t")
    ActionChains(browser).move_to_element(target).perform()
    assert target.text == "hovered"
    # Nothing from the network: the remote image never loads.
    assert browser.execute_script("return document.getElementById('remote').naturalWidth") == 0
    assert browser.save_screenshot(str(tmp_path / "shot.png"))
