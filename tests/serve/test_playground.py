"""The playground page in headless Chromium: type a prime, press Generate, watch the text
arrive (streamed with fetch from /v1/generate), the same text the Python API gives."""
import threading

import pytest
import uvicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import charrnn
from charrnn.config import ServeConfig
from charrnn.serve.app import create_app
from charrnn.serve.server import bind
from live import serve_live  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def page_server(trained):
    """The app on uvicorn in a thread, on a free port of 127.0.0.1; stopped at the end."""
    model = charrnn.load(trained, device="cpu")
    app = create_app(model.net, model.tokenizer, {"folder": "run", "config": model.saved_config},
                     ServeConfig(port=0))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield model, f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(10)


def test_type_a_prime_press_generate_and_see_the_text_arrive(browser, page_server, tmp_path):
    model, url = page_server
    browser.get(url)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda b: "LSTM 1x64" in b.find_element(By.ID, "model").text)
    prime = browser.find_element(By.ID, "prime")
    prime.send_keys("the king ")
    for name, value in (("length", "300"), ("seed", "3")):
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    browser.find_element(By.ID, "generate").click()
    text = lambda: browser.execute_script("return document.getElementById('text').textContent")
    wait.until(lambda b: len(text()) > len("the king "))          # the first characters
    wait.until(lambda b: "stopped: length" in b.find_element(By.ID, "status").text)
    assert text() == model.generate("the king ", length=300, seed=3)
    assert "seed 3" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "generate").is_enabled()
    shot = tmp_path / "playground.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_the_page_asks_for_the_key_when_the_server_has_one(browser, serve_live):
    from selenium.webdriver.support import expected_conditions
    with serve_live(api_key="page-key-0123456789") as (model, url):
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        alert = wait.until(expected_conditions.alert_is_present())
        assert "API key" in alert.text
        alert.send_keys("page-key-0123456789")
        alert.accept()
        wait.until(lambda b: "LSTM 1x64" in b.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "prime").send_keys("the ")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: "stopped: length" in b.find_element(By.ID, "status").text)
        browser.execute_script("sessionStorage.clear()")
