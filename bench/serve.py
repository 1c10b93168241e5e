"""The serving load check: `python -m bench.serve [--quick]`, also a part of `make bench`.

A local `charrnn serve` (its own process, 127.0.0.1, a free port) of an LSTM 2x512 (random
weights: the speed does not depend on training), and N = 1, 8, 64 concurrent streaming clients
(in one process of their own, asyncio over plain sockets) for a fixed time each. Each client
asks for 300 characters at a time, streamed, again and again until the time is up. Reported:
characters per second summed over the clients, time to first character (p50, p99), errors
(non-200 answers, error events, broken streams: must be 0) and the server's peak memory.
With continuous batching, 64 clients must get at least 5x the summed throughput of 1. The
export parity figures of the same model (`charrnn export`) come with it.

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
START, END = "<!-- serve load check -->", "<!-- /serve load check -->"


async def _client(port: int, seed: int, deadline: float, stats: dict) -> None:
    """One client: streamed requests one after another until ``deadline``."""
    while time.monotonic() < deadline:
        body = json.dumps({"prime": "The ", "length": REQUEST_LENGTH, "seed": seed,
                           "temperature": 0.8, "stream": True}).encode()
        sent = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["errors"] += 1
            continue
        writer.write(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % (port, len(body)) + body)
        try:
            await asyncio.wait_for(_read_stream(reader, sent, stats),
                                   max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            pass                           # the time is up mid-stream: not an error
        except (OSError, ValueError, asyncio.IncompleteReadError):
            stats["errors"] += 1
        writer.close()
        seed += 1000


async def _read_stream(reader, sent: float, stats: dict) -> None:
    if b" 200 " not in await reader.readline():
        stats["errors"] += 1
        return
    while (await reader.readline()) not in (b"\r\n", b""):
        pass                               # the headers
    buffer, first = b"", True
    while True:                            # chunked transfer encoding
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            raise ValueError("the stream ended without an end event")
        buffer += (await reader.readexactly(size + 2))[:-2]
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            if event.startswith(b"event: end"):
                return
            if not event.startswith(b"data: "):
                stats["errors"] += 1
                return
            stats["chars"] += len(json.loads(event[6:])["text"])
            if first:
                stats["first"].append(time.monotonic() - sent)
                first = False


def clients(port: str, count: str, seconds: str) -> None:
    """`python -m bench.serve clients PORT N SECONDS`: N clients; prints one JSON line."""
    stats = {"chars": 0, "errors": 0, "first": []}
    deadline = time.monotonic() + float(seconds)

    async def main():
        await asyncio.gather(*(_client(int(port), seed, deadline, stats)
                               for seed in range(int(count))))

    started = time.monotonic()
    asyncio.run(main())
    stats["seconds"] = time.monotonic() - started
    print(json.dumps(stats))


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


def run(seconds: float) -> dict:
    """Start the server, run the clients for each N, export; the figures."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    machine = _machine()
    with tempfile.TemporaryDirectory() as tmp:
        _model(Path(tmp) / "model")
        server = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", f"{tmp}/model",
                                   "--port", "0", "--max-batch", "64", "--max-queue", "64"],
                                  stdout=subprocess.PIPE, text=True, env=env)
        try:
            port = re.search(r":(\d+)/ ", server.stdout.readline()).group(1)
            rows = []
            for count in CLIENTS:
                result = subprocess.run([sys.executable, "-m", "bench.serve", "clients", port,
                                         str(count), str(seconds)], capture_output=True,
                                        text=True, cwd=HERE.parent, env=env, check=True)
                stats = json.loads(result.stdout.strip().splitlines()[-1])
                rows.append({"clients": count, "chars_per_sec": stats["chars"] /
                             stats["seconds"], "first_p50": _percentile(stats["first"], 0.5),
                             "first_p99": _percentile(stats["first"], 0.99),
                             "requests": len(stats["first"]), "errors": stats["errors"],
                             "server_peak_rss_mb": _peak_rss_mb(server.pid)})
                print(f"  {count} clients: {rows[-1]}", flush=True)
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


def table(figures: dict) -> str:
    """The section of bench/RESULTS.md, between its markers."""
    rows = figures["rows"]
    ratio = rows[-1]["chars_per_sec"] / rows[0]["chars_per_sec"]
    lines = [START, "## Serving: load check (`python -m bench.serve`)", "",
             f"`charrnn serve` of an LSTM 2x512 (fp32, --max-batch 64), N concurrent streaming "
             f"clients in a process of their own, {figures['seconds']:.0f} s each, requests of "
             f"{REQUEST_LENGTH} characters; the server stopped by SIGTERM with status "
             f"{figures['server_exit']}. Machine: {figures['machine']}.", "",
             "| clients | chars/s, summed | first character p50 / p99 (ms) | requests | errors "
             "| server peak RSS (MB) |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['clients']} | {row['chars_per_sec']:,.0f} | "
                     f"{row['first_p50'] * 1000:.0f} / {row['first_p99'] * 1000:.0f} | "
                     f"{row['requests']} | {row['errors']} | {row['server_peak_rss_mb']:.0f} |")
    met = ratio >= GOAL and all(row["errors"] == 0 for row in rows)
    lines += ["", f"{CLIENTS[-1]} clients get {ratio:.1f}x the summed throughput of 1 (goal: "
              f">= {GOAL:.0f}x, errors 0): {'met' if met else 'NOT met'}.", "",
              f"Export of the same model: {figures['export']}.", END]
    return "\n".join(lines)


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
        clients(*sys.argv[2:5])
    else:
        figures = run(5.0 if "--quick" in sys.argv else 30.0)
        section = table(figures)
        print("\n" + section)
        write(section, HERE / ("RESULTS-quick.md" if "--quick" in sys.argv else "RESULTS.md"))
