"""`charrnn serve` as users meet it: a real server in its own process on 127.0.0.1, a free
port (--port 0), concurrent streaming clients, a client that goes away, a full queue, a body
refused as it arrives, and SIGTERM."""
import http.client
import json
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import charrnn

LIMITS = ["--max-batch", "4", "--max-queue", "2", "--max-length", "1000000", "--max-body",
          "4096", "--client-slots", "4", "--client-queue", "2"]     # (one client: all of it)


@pytest.fixture(scope="module")
def server(trained):
    """(process, port) of `charrnn serve RUN --port 0 ...`; killed at the end if still up."""
    process = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", str(trained),
                                "--port", "0", *LIMITS], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    try:
        first = lines.get(timeout=60)
    except queue.Empty:
        process.kill()
        pytest.fail(f"the server printed nothing: {process.stderr.read()}")
    port = int(re.search(r"at http://127\.0\.0\.1:(\d+)/ ", first).group(1))
    yield process, port, lines, trained
    if process.poll() is None:
        process.kill()
        process.wait(10)


def _open(port, body):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v1/generate", json.dumps(body),
                       {"Content-Type": "application/json"})
    return connection, connection.getresponse()


def _event(response):
    """The next Server-Sent Event of ``response``: (name, data), or None at the end."""
    lines = []
    while True:
        line = response.readline().decode()
        if not line:
            return None
        if line == "\n" and lines:
            fields = dict(item.split(": ", 1) for item in lines)
            return fields.get("event", "message"), json.loads(fields["data"])
        if line != "\n":
            lines.append(line.rstrip("\n"))


def _health(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/health")
    return json.loads(connection.getresponse().read())


def _wait_for(port, **expected):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        health = _health(port)
        if all(health[k] == v for k, v in expected.items()):
            return health
        time.sleep(0.02)
    pytest.fail(f"/health never showed {expected}: {health}")


def test_concurrent_streams_get_the_texts_they_would_get_alone(server, trained):
    """Four clients at once, each in its own thread, read 3000 characters of a long stream
    and go away: the server steps them together, and each text is what the Python API gives
    alone for its seed and options."""
    port = server[1]
    texts, started, barrier = {}, threading.Semaphore(0), threading.Barrier(4)

    def client(seed):
        barrier.wait()
        connection, response = _open(port, {"prime": "the ", "length": 1_000_000,
                                            "seed": seed, "temperature": 0.5 + seed / 4,
                                            "stream": True})
        assert response.status == 200, response.read()
        text = "the "
        while len(text) < 3004:
            name, data = _event(response)
            text += data["text"]
            if len(text) == 4 + len(data["text"]):
                started.release()
        texts[seed] = text[:3004]
        connection.close()

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert started.acquire(timeout=30)
    assert _health(port)["running"] == 4          # all four are stepped together
    for thread in threads:
        thread.join(60)
    _wait_for(port, running=0, waiting=0)         # gone clients free their slots
    model = charrnn.load(trained, device="cpu")
    for seed in range(4):
        assert texts[seed] == model.generate("the ", length=3000, seed=seed,
                                             temperature=0.5 + seed / 4)


def test_a_client_that_goes_away_frees_its_slot_and_a_full_queue_is_refused(server):
    port = server[1]
    opened = [_open(port, {"length": 1_000_000, "seed": i, "stream": True}) for i in range(4)]
    for _, response in opened:
        assert _event(response)[0] == "message"
    opened += [_open(port, {"length": 10, "stream": True}) for _ in range(2)]
    _wait_for(port, running=4, waiting=2)
    connection, refused = _open(port, {"length": 10})
    assert refused.status == 503 and refused.getheader("Retry-After") == "1"
    assert "2 requests are already waiting" in json.loads(refused.read())["error"]
    connection.close()
    opened[0][0].sock.shutdown(2)      # one client goes away mid-stream
    opened[0][0].close()
    for _, response in opened[4:]:     # the waiting ones get its slots and finish
        events = iter(lambda r=response: _event(r), None)
        assert [name for name, _ in events][-1] == "end"
    for connection, _ in opened[1:4]:
        connection.close()
    _wait_for(port, running=0, waiting=0)


def test_bad_requests_are_refused_and_a_big_body_before_it_is_all_sent(server):
    port = server[1]
    connection, response = _open(port, {"prime": "the", "temprature": 0.5})
    assert response.status == 422 and "unknown field 'temprature'" in response.read().decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("POST", "/v1/generate")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for _ in range(5):                  # 5 KB of a body that would go on: past 4096 bytes
        connection.send(b"400\r\n" + b" " * 1024 + b"\r\n")
    response = connection.getresponse()
    assert response.status == 413 and "--max-body" in response.read().decode()
    assert _health(port)["status"] == "ok"


def test_the_serving_page_curl_lines_work_as_written(server):
    if not shutil.which("curl"):
        pytest.skip("no curl here")
    port = server[1]
    page = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text(
        encoding="utf-8")
    # The page's prime is the default corpus's speaker; the tiny model here knows "ROMEO:".
    lines = [line.replace('"Romeo."', '"ROMEO:"') for line in page.splitlines()
             if line.startswith("curl ")]
    assert len(lines) == 4
    answers = [subprocess.run(shlex.split(line.replace(":8000/", f":{port}/")), timeout=60,
                              capture_output=True, text=True, check=True).stdout
               for line in lines]
    model = charrnn.load(server[3], device="cpu")
    assert json.loads(answers[0])["texts"] == [model.generate("ROMEO:", length=200,
                                                              temperature=0.8, seed=1)]
    assert answers[1].startswith("data: {") and "event: end" in answers[1]
    assert json.loads(answers[2])["model"]["cell"] == "lstm"
    assert json.loads(answers[3])["status"] == "ok"


def test_sigterm_ends_the_open_streams_and_exits_cleanly(server):
    process, port, lines, _ = server
    connection, response = _open(port, {"length": 1_000_000, "stream": True})
    assert _event(response)[0] == "message"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    events = list(iter(lambda: _event(response), None))
    assert events[-1][0] == "end" and events[-1][1]["stopped"] == ["shutdown"]
    assert process.wait(10) == 0 and time.monotonic() - started < 5
    assert lines.get(timeout=5).strip() == "stopped"
    with pytest.raises(ConnectionRefusedError):
        _health(port)
