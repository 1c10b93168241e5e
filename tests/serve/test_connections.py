"""The connection limits through a real socket (charrnn/serve/connections.py, uvicorn's
keep-alive timeout): a client that sends nothing, half a header or half a body is cut off,
an idle keep-alive connection is closed, past the connection cap a new connection is told
so at once, and the server keeps answering others; TCP_NODELAY on every connection."""
import http.client
import socket
import statistics
import time

from charrnn.serve.server import bind
from live import serve_live  # noqa: F401 (a fixture)

LIMITS = {"header_timeout": 1.0, "body_timeout": 1.0, "keep_alive_timeout": 1.0}


def _connect(url):
    host, port = url.rsplit("/", 1)[-1].split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _closed_within(sock, seconds):
    """(seconds until the server closed ``sock``, what it sent first), or None if open."""
    started, data = time.monotonic(), b""
    sock.settimeout(seconds)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return time.monotonic() - started, data
            data += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        return time.monotonic() - started, data


def _health(url, sock=None):
    port = int(url.rsplit(":", 1)[-1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/health")
    return connection.getresponse().status


def test_slow_and_silent_clients_are_cut_off_and_others_still_answered(serve_live):
    with serve_live(**LIMITS) as (_, url):
        silent = _connect(url)
        half_header = _connect(url)
        half_header.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        half_body = _connect(url)
        half_body.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                          b"application/json\r\nContent-Length: 100\r\n\r\n{\"length\": ")
        trickle = _connect(url)          # a byte now and then: the deadline still holds
        trickle.sendall(b"G")
        assert _health(url) == 200        # meanwhile, others are answered
        time.sleep(0.5)
        trickle.sendall(b"E")
        for sock in (silent, half_header, half_body, trickle):
            closed = _closed_within(sock, 3)
            assert closed is not None and closed[0] < 2.5
            assert closed[1] == b"" or b" 408 " in closed[1].split(b"\r\n")[0]
        assert b"--body-timeout" in _send_half_body_and_read(url)


def _send_half_body_and_read(url):
    sock = _connect(url)
    sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n{")
    return _closed_within(sock, 3)[1]


def test_an_idle_keep_alive_connection_is_closed(serve_live):
    with serve_live(**LIMITS) as (_, url):
        sock = _connect(url)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        closed = _closed_within(sock, 3)
        assert closed is not None and 0.5 < closed[0] < 2.5


def test_past_the_connection_cap_a_new_connection_gets_503_at_once(serve_live):
    with serve_live(max_connections=4, **LIMITS) as (_, url):
        idle = [_connect(url) for _ in range(4)]
        time.sleep(0.1)
        extra = _connect(url)
        closed = _closed_within(extra, 1)
        assert closed is not None and b" 503 " in closed[1] and b"too many" in closed[1]
        for sock in idle:                # the idle ones are cut off; then room again
            assert _closed_within(sock, 3) is not None
        assert _health(url) == 200


def test_keep_alive_requests_do_not_stall_tcp_nodelay(serve_live):
    listener = bind("127.0.0.1", 0)
    assert listener.proto == socket.IPPROTO_TCP          # so asyncio sets TCP_NODELAY
    listener.close()
    with serve_live() as (_, url):
        port = int(url.rsplit(":", 1)[-1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        times = []
        for _ in range(8):               # one connection, reused (Nagle + delayed ACK: 40 ms)
            started = time.perf_counter()
            connection.request("GET", "/health")
            assert connection.getresponse().read()
            times.append(time.perf_counter() - started)
        assert statistics.median(times[1:]) < 0.02, times


def test_head_over_a_real_socket(serve_live):
    with serve_live() as (_, url):
        port = int(url.rsplit(":", 1)[-1])
        for path in ("/health", "/"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("HEAD", path)
            response = connection.getresponse()
            assert response.status == 200 and response.read() == b""
