"""The serving load check: `python -m bench.serve [--quick]`, also a part of `make bench`.

A local `charrnn serve` (its own process, 127.0.0.1, a free port, the default limits but
--max-batch 64 and --max-queue 64 named) of an LSTM 2x512 (random weights: the speed does not
depend on training). The clients run in one process of their own, asyncio over plain sockets,
each from an address of its own (127.0.0.2, 127.0.0.3...: on Linux every 127.x.y.z is this
machine), since the server shares its slots and queue by client address. Each run lasts a
fixed time (30 s; --quick: 5 s):

* N = 1, 8, 64 streaming clients, a new connection per request: each asks for 300
  characters at a time, streamed, again and again until the time is up;
* 64 such clients on keep-alive connections (one connection each, reused);
* a slow-client flood beside 8 normal clients: FLOOD connections from one more address, a
  third sending nothing, a third half a header, a third the headers and half a body, each
  opened again once the server closes it (the server's --header-timeout and --body-timeout,
  10 s and 30 s by default; this run lasts 5 s longer than the others, so that the body
  timeout comes within it);
* one greedy client beside 8 normal ones: from one address, GREEDY streamed requests of
  GREEDY_LENGTH characters in flight at once, each sent again once answered (a second after
  a 503, its Retry-After).

Reported: characters per second summed over the normal clients, time to first character (p50,
p99), errors (non-200 answers, error events, broken streams: must be 0) and the server's peak
memory; for the flood, the connections opened and those the server closed with 408; for the
greedy client, its requests accepted and refused (503) and its characters per second. With
continuous batching, 64 clients must get at least 5x the summed throughput of 1. The export
parity figures of the same model (`charrnn export`) come with it.

The table goes to stdout and into bench/RESULTS.md, between the markers of its section.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENTS = (1, 8, 64)
REQUEST_LENGTH = 300
GOAL = 5.0                     # 64 clients against 1, summed characters per second
NORMAL = 8                     # the normal clients beside a flood or a greedy client
FLOOD = 600                    # slow connections (under the default --max-connections, 1,000)
FLOOD_EXTRA = 5.0              # seconds the flood run lasts longer than the others
GREEDY, GREEDY_LENGTH = 128, 10_000
SLOW = (b"",                                                       # nothing
        b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-",  # half a header
        b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{\"prime\": \"")                 # half a body
START, END = "<!-- serve load check -->", "<!-- /serve load check -->"


def _address(number: int) -> str:
    """The source address of client ``number`` (0, 1...): 127.0.0.2, 127.0.0.3..."""
    return f"127.0.{(number + 2) // 256}.{(number + 2) % 256}"


def _stats() -> dict:
    return {"chars": 0, "errors": 0, "first": [], "connections": 0}


def _post(port: int, body: bytes, keep_alive: bool) -> bytes:
    return (b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
            b"application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (port, len(body), b"" if keep_alive else b"Connection: close\r\n") + body)


async def _client(port: int, number: int, deadline: float, stats: dict,
                  keep_alive: bool = False) -> None:
    """One client: streamed requests one after another until ``deadline``, on a new
    connection each (``keep_alive``: on one connection, opened again only if it breaks)."""
    seed, reader, writer = number, None, None
    while time.monotonic() < deadline:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(_address(number), 0))
            except OSError:
                stats["errors"] += 1
                await asyncio.sleep(0.1)
                continue
            stats["connections"] += 1
        body = json.dumps({"prime": "The ", "length": REQUEST_LENGTH, "seed": seed,
                           "temperature": 0.8, "stream": True}).encode()
        sent = time.monotonic()
        writer.write(_post(port, body, keep_alive))
        whole = False
        try:
            whole = await asyncio.wait_for(_read_stream(reader, sent, stats),
                                           max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            pass                           # the time is up mid-stream: not an error
        except (OSError, ValueError, asyncio.IncompleteReadError):
            stats["errors"] += 1
        if not (keep_alive and whole):
            writer.close()
            writer = None
        seed += 1000
    if writer is not None:
        writer.close()


async def _read_stream(reader, sent: float, stats: dict) -> bool:
    """Read one streamed answer to its last chunk; whether it came whole (with its end
    event). Counts the characters, the first one's time and the errors."""
    if b" 200 " not in await reader.readline():
        stats["errors"] += 1
        return False
    return await _read_events(reader, sent, stats)


async def _read_events(reader, sent: float, stats: dict) -> bool:
    """_read_stream once the status line is in."""
    while (await reader.readline()) not in (b"\r\n", b""):
        pass                               # the headers
    buffer, first, ended = b"", True, False
    while True:                            # chunked transfer encoding
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            await reader.readline()        # the empty line after the last chunk
            if not ended:
                raise ValueError("the stream ended without an end event")
            return True
        buffer += (await reader.readexactly(size + 2))[:-2]
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            if event.startswith(b"event: end"):
                ended = True
            elif not event.startswith(b"data: "):
                stats["errors"] += 1
                return False
            else:
                stats["chars"] += len(json.loads(event[6:])["text"])
                if first:
                    stats["first"].append(time.monotonic() - sent)
                    first = False


async def _connect(port: int, client: int, counts: dict, failed: str):
    """(reader, writer) of a new connection from client address ``client`` (_address), or
    None after counting ``counts[failed]`` and waiting a second (the server refused it)."""
    try:
        return await asyncio.open_connection("127.0.0.1", port,
                                             local_addr=(_address(client), 0))
    except OSError:
        counts[failed] += 1
        await asyncio.sleep(1.0)
        return None


async def _slow(port: int, kind: int, deadline: float, flood: dict) -> None:
    """One slow connection of the flood (SLOW[kind]), opened again whenever the server
    closes it, until ``deadline``."""
    while time.monotonic() < deadline:
        connection = await _connect(port, 250, flood, "refused")
        if connection is None:
            continue
        reader, writer = connection
        flood["opened"] += 1
        writer.write(SLOW[kind])
        try:
            answer = await asyncio.wait_for(reader.read(256),
                                            max(0.0, deadline - time.monotonic()))
            flood["closed"] += 1
            flood["408"] += b" 408 " in answer
            flood["503"] += b" 503 " in answer
        except asyncio.TimeoutError:
            pass
        except OSError:
            flood["closed"] += 1
        writer.close()


async def _greedy(port: int, deadline: float, greedy: dict, seed: int) -> None:
    """One of the greedy client's requests in flight: GREEDY_LENGTH characters, streamed,
    sent again once answered (a second after a 503, its Retry-After), until ``deadline``."""
    while time.monotonic() < deadline:
        body = json.dumps({"prime": "The ", "length": GREEDY_LENGTH, "seed": seed,
                           "stream": True}).encode()
        seed += GREEDY
        connection = await _connect(port, 200, greedy, "errors")
        if connection is None:
            continue
        reader, writer = connection
        writer.write(_post(port, body, False))
        try:
            status = await asyncio.wait_for(reader.readline(),
                                            max(0.0, deadline - time.monotonic()))
            if b" 503 " in status:
                greedy["503"] += 1
                writer.close()
                await asyncio.sleep(1.0)
                continue
            if b" 200 " not in status:
                greedy["errors"] += 1
            else:
                greedy["accepted"] += 1
                await asyncio.wait_for(_read_events(reader, time.monotonic(), greedy),
                                       max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            pass
        except (OSError, ValueError, asyncio.IncompleteReadError):
            greedy["errors"] += 1
        writer.close()


def clients(mode: str, port: str, count: str, seconds: str) -> None:
    """`python -m bench.serve clients MODE PORT N SECONDS`: N normal clients (MODE new,
    keepalive, flood or greedy: see the module docstring); prints one JSON line."""
    port_number, count_number = int(port), int(count)
    result = {"normal": _stats()}
    deadline = time.monotonic() + float(seconds)

    async def main():
        tasks = [_client(port_number, number, deadline, result["normal"], mode == "keepalive")
                 for number in range(count_number)]
        if mode == "flood":
            result["flood"] = {"opened": 0, "closed": 0, "408": 0, "503": 0, "refused": 0}
            tasks += [_slow(port_number, number % len(SLOW), deadline, result["flood"])
                      for number in range(FLOOD)]
        elif mode == "greedy":
            result["greedy"] = {"accepted": 0, "503": 0, **_stats()}
            tasks += [_greedy(port_number, deadline, result["greedy"], number)
                      for number in range(GREEDY)]
        await asyncio.gather(*tasks)

    started = time.monotonic()
    asyncio.run(main())
    result["seconds"] = time.monotonic() - started
    print(json.dumps(result))


def _percentile(values: list, share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def _model(folder: Path) -> None:
    import torch
    from charrnn import CharRNN, CharTokenizer, ModelConfig
    from charrnn.model.checkpoint import checkpoint_config, save_checkpoint

    torch.manual_seed(0)
    tokenizer = CharTokenizer([chr(c) for c in range(32, 127)] + ["\n"])
    net = CharRNN(ModelConfig(vocab_size=tokenizer.vocab_size, cell="lstm", layers=2,
                              hidden_size=512, embed_size=64))
    save_checkpoint(folder, net, tokenizer, checkpoint_config(net, tokenizer, None, {}))


def _settle(port: int, seconds: float = 15.0) -> None:
    """Wait until the server runs and queues nothing (the last run's requests cancelled)."""
    import http.client
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/health")
            health = json.loads(connection.getresponse().read())
            if health["running"] == 0 and health["waiting"] == 0:
                return
        except (OSError, ValueError):
            pass
        finally:
            connection.close()
        time.sleep(0.2)


def _row(label, count: int, result: dict, server_pid: int) -> dict:
    stats = result["normal"]
    row = {"clients": label, "count": count, "chars_per_sec": stats["chars"] / result["seconds"],
           "first_p50": _percentile(stats["first"], 0.5),
           "first_p99": _percentile(stats["first"], 0.99), "requests": len(stats["first"]),
           "errors": stats["errors"], "connections": stats["connections"],
           "server_peak_rss_mb": _peak_rss_mb(server_pid)}
    if "flood" in result:
        row["flood"] = result["flood"]
    if "greedy" in result:
        greedy = result["greedy"]
        row["greedy"] = {"accepted": greedy["accepted"], "503": greedy["503"],
                         "errors": greedy["errors"],
                         "chars_per_sec": greedy["chars"] / result["seconds"]}
    return row


def run(seconds: float) -> dict:
    """Start the server, run the clients for each N and each added run, export; the figures."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    machine = _machine()
    runs = [(count, "new", count, seconds) for count in CLIENTS]
    runs += [("64, keep-alive", "keepalive", 64, seconds),
             (f"{NORMAL} beside a slow-client flood", "flood", NORMAL, seconds + FLOOD_EXTRA),
             (f"{NORMAL} beside a greedy client", "greedy", NORMAL, seconds)]
    with tempfile.TemporaryDirectory() as tmp:
        _model(Path(tmp) / "model")
        server = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", f"{tmp}/model",
                                   "--port", "0", "--max-batch", "64", "--max-queue", "64"],
                                  stdout=subprocess.PIPE, text=True, env=env)
        try:
            port = re.search(r":(\d+)/ ", server.stdout.readline()).group(1)
            rows = []
            for label, mode, count, length in runs:
                _settle(int(port))
                result = subprocess.run([sys.executable, "-m", "bench.serve", "clients", mode,
                                         port, str(count), str(length)], capture_output=True,
                                        text=True, cwd=HERE.parent, env=env, check=True)
                rows.append(_row(label, count, json.loads(result.stdout.strip()
                                                          .splitlines()[-1]), server.pid))
                rows[-1]["load_after"] = os.getloadavg()[0]      # (others' work shows here)
                print(f"  {label} clients: {rows[-1]}", flush=True)
        finally:
            server.terminate()
            server.wait(30)
        export = subprocess.run([sys.executable, "-m", "charrnn", "export", f"{tmp}/model",
                                 "--out", f"{tmp}/onnx"], capture_output=True, text=True,
                                env=env, check=True)
    return {"rows": rows, "seconds": seconds, "export": export.stdout.splitlines()[0],
            "server_exit": server.returncode, "machine": machine}


def _machine() -> str:
    """The CPU, whether it has native bf16, the cores and how busy they were at the start."""
    import torch
    from charrnn.model.device import cpu_has_native_bf16

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    return (f"{model.group(1) if model else 'CPU'}"
            f"{' with AVX512-BF16' if cpu_has_native_bf16() else ''}, {os.cpu_count()} "
            f"cores (load average {os.getloadavg()[0]:.1f} at the start: shared with other "
            f"work), torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")


def _cells(row: dict) -> str:
    load = f" {row['load_after']:.1f} |" if "load_after" in row else ""
    return (f"{row['chars_per_sec']:,.0f} | {row['first_p50'] * 1000:.0f} / "
            f"{row['first_p99'] * 1000:.0f} | {row['requests']} | {row['errors']} | "
            f"{row['server_peak_rss_mb']:.0f} |{load}")


def table(figures: dict) -> str:
    """The section of bench/RESULTS.md, between its markers (figures of an earlier version,
    without the added runs, give the first table only)."""
    plain = [row for row in figures["rows"] if isinstance(row["clients"], int)]
    added = [row for row in figures["rows"] if not isinstance(row["clients"], int)]
    ratio = plain[-1]["chars_per_sec"] / plain[0]["chars_per_sec"]
    loads = all("load_after" in row for row in figures["rows"])
    header = ("| clients | chars/s, summed | first character p50 / p99 (ms) | requests | errors "
              "| server peak RSS (MB) |" + (" load average after |" if loads else ""))
    rule = "|---" * (7 if loads else 6) + "|"
    lines = [START, "## Serving: load check (`python -m bench.serve`)", "",
             f"`charrnn serve` of an LSTM 2x512 (fp32, --max-batch 64, --max-queue 64, the other "
             f"limits their defaults), N concurrent streaming clients in a process of their own, "
             f"each from an address of its own, {figures['seconds']:.0f} s each, requests of "
             f"{REQUEST_LENGTH} characters; the server stopped by SIGTERM with status "
             f"{figures['server_exit']}. Machine: {figures['machine']}." + (
                 " The load average (1 min) after each run counts the server, the clients and "
                 "any other work on the machine meanwhile." if loads else ""), "", header, rule]
    lines += [f"| {row['clients']} | {_cells(row)}" for row in plain]
    met = ratio >= GOAL and all(row["errors"] == 0 for row in plain)
    lines += ["", f"{CLIENTS[-1]} clients get {ratio:.1f}x the summed throughput of 1 (goal: "
              f">= {GOAL:.0f}x, errors 0): {'met' if met else 'NOT met'}."]
    if added:
        lines += ["", "Clients that do not play fair, beside normal ones (the figures are the "
                  "normal clients'; compare with the rows above):", "", header, rule]
        lines += [f"| {row['clients']} | {_cells(row)}" for row in added]
        lines += [""] + [_note(row) for row in added]
    lines += ["", f"Export of the same model: {figures['export']}.", END]
    return "\n".join(lines)


def _note(row: dict) -> str:
    """What the unfair client of an added run did, in one sentence."""
    if "flood" in row:
        flood = row["flood"]
        return (f"- Slow-client flood: {FLOOD} connections at once (a third sending nothing, a "
                f"third half a header, a third half a body), {flood['opened']:,} opened in all "
                f"during the run, {flood['408']:,} closed by the server with 408 (its header "
                f"and body timeouts, 10 s and 30 s), {flood['503']:,} refused with 503.")
    if "greedy" in row:
        greedy = row["greedy"]
        return (f"- Greedy client: one address keeping {GREEDY} streamed requests of "
                f"{GREEDY_LENGTH:,} characters in flight, each sent again once answered (a "
                f"second after a 503); {greedy['accepted']} accepted, {greedy['503']:,} "
                f"refused with 503 (its share: half the slots and a quarter of the queue), "
                f"{greedy['errors']} other errors; it got {greedy['chars_per_sec']:,.0f} "
                f"characters/s, the {row['count']} normal clients "
                f"{row['chars_per_sec']:,.0f} together.")
    return (f"- Keep-alive: {row['count']} clients, {row['requests']} requests over "
            f"{row['connections']} connections.")


def write(section: str, results: Path = HERE / "RESULTS.md") -> None:
    """Put ``section`` into ``results``: in place of the earlier one, else before "What was
    tried" (bench/TRIED.md, which `make bench` appends), else at the end."""
    text = results.read_text() if results.exists() else ""
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    elif "\n## What was tried" in text:
        at = text.index("\n## What was tried")
        text = text[:at].rstrip() + "\n\n" + section + "\n" + text[at:]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    results.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["clients"]:
        clients(*sys.argv[2:6])
    else:
        figures = run(5.0 if "--quick" in sys.argv else 30.0)
        section = table(figures)
        print("\n" + section)
        write(section, HERE / ("RESULTS-quick.md" if "--quick" in sys.argv else "RESULTS.md"))
