"""`make bench` / `python -m bench`: charrnn beside the plain PyTorch loop, in one table.

Each figure runs in a fresh subprocess (bench/section.py), so its peak RSS is its own. The
table goes to stdout and to bench/RESULTS.md with the machine, torch version and commands;
bench/results.json keeps the figures, and a later run fails loudly if a peak RSS doubles.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench import serve as serve_bench

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "tinyshakespeare.txt"


def default_corpus() -> str:
    """tinyshakespeare (the README's figures), else the default corpus, saying so."""
    if SHARED.exists():
        return str(SHARED)
    fallback = HERE.parent / "data" / "shakespeare.txt"
    if fallback.exists():
        print(f"note: no tinyshakespeare at {SHARED}; benchmarking {fallback} (a different, "
              "5 MB corpus: its losses are not comparable with the README's table; pass "
              "--corpus FILE to choose)", file=sys.stderr)
        return str(fallback)
    sys.exit("error: no corpus: pass --corpus FILE (or run `make data` for the default one)")


def run_section(*args) -> dict:
    command = [sys.executable, "-m", "bench.section", *map(str, args)]
    print("  $", " ".join(command[1:]), flush=True)
    result = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: bench section {args[0]} failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["command"] = "python -m bench.section " + " ".join(map(str, args))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--corpus", default=None, help="text file (default: tinyshakespeare)")
    parser.add_argument("--quick", action="store_true", help="short runs, under 2 minutes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", default=None,
                        help="where the table goes (default bench/RESULTS.md; "
                             "bench/RESULTS-quick.md with --quick)")
    args = parser.parse_args()
    args.results = args.results or str(HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md"))
    corpus = args.corpus or default_corpus()
    quick = args.quick
    short = 15 if quick else 60
    started = time.time()
    rows, figures = [], {}

    print("matmul peak", flush=True)
    peak = run_section("peak", args.device)
    figures["peak"] = peak

    print(f"quality after {short}s of training", flush=True)
    ours = run_section("quality", corpus, short, "cpu-1m", args.device)
    plain = run_section("quality_plain", corpus, short, args.device)
    figures["quality_short"] = {"charrnn": ours, "plain": plain}
    rows.append((f"val loss after {short}s (nats/char)", ours["val_loss"], plain["val_loss"],
                 plain["val_loss"] / ours["val_loss"], "<= 1.50" if short == 60 else "-",
                 short != 60 or ours["val_loss"] <= 1.50))
    if not quick:
        print("quality after 10 minutes of training", flush=True)
        long = run_section("quality", corpus, 600, "cpu-10m", args.device)
        figures["quality_10m"] = long
        rows.append(("val loss after 10 min (nats/char)", long["val_loss"], 1.427,
                     1.427 / long["val_loss"], "<= 1.38", long["val_loss"] <= 1.38))

    print(f"fine-tuning: {short}s on the corpus, then on a German text, against training on "
          f"it from scratch ({short}s each, and the base's steps each)", flush=True)
    tuned = run_section("finetune", corpus, short, args.device)
    figures["finetune"] = tuned
    wins = tuned["finetune_same_steps_val_loss"] < tuned["scratch_same_steps_val_loss"]
    rows.append((f"fine-tune vs scratch on German (+{len(tuned['added_chars'])} chars), "
                 f"{tuned['base_steps']} steps each: val loss",
                 tuned["finetune_same_steps_val_loss"], tuned["scratch_same_steps_val_loss"],
                 tuned["scratch_same_steps_val_loss"] / tuned["finetune_same_steps_val_loss"],
                 "fine-tune lower", wins))
    rows.append((f"  same, {short}s each (steps {tuned['finetune_steps']} / "
                 f"{tuned['scratch_steps']})", tuned["finetune_val_loss"],
                 tuned["scratch_val_loss"], tuned["scratch_val_loss"] / tuned["finetune_val_loss"],
                 "-", True))
    rows.append(("  forgetting: corpus val loss before / after the fine-tune",
                 f"{tuned['old_val_before']:.3f} / {tuned['old_val_after']:.3f}", None, None, "-",
                 True))

    print("training speed, LSTM 2x512, batch 64, seq 128", flush=True)
    steps = 8 if quick else 30
    ours = run_section("speed", steps, args.device)
    plain = run_section("speed_plain", steps, args.device)
    figures["speed"] = {"charrnn": ours, "plain": plain}
    fraction = ours["chars_per_sec"] * ours["flops_per_char"] / (peak["gflops"] * 1e9)
    rows.append(("train chars/s (LSTM 2x512, b64)", ours["chars_per_sec"], plain["chars_per_sec"],
                 ours["chars_per_sec"] / plain["chars_per_sec"], ">= 1.0x", ours["chars_per_sec"]
                 >= plain["chars_per_sec"]))
    rows.append(("  share of fp32 matmul peak", fraction, plain["chars_per_sec"]
                 * ours["flops_per_char"] / (peak["gflops"] * 1e9), None, "-", True))
    rows.append(("  training GFLOP/s (fp32 / bf16 matmul peak)",
                 ours["chars_per_sec"] * ours["flops_per_char"] / 1e9,
                 plain["chars_per_sec"] * ours["flops_per_char"] / 1e9, None,
                 f"peak {peak['gflops']:.0f} / {peak['gflops_bf16']:.0f}", True))

    print("sampling speed, LSTM 2x512", flush=True)
    length = 500 if quick else 3000
    for batch, goal in ((1, 3000), (64, 30000)):
        ours = run_section("sample", batch, length, args.device, "fp32")
        fast = run_section("sample", batch, length, args.device, "bf16")
        plain = run_section("sample_plain", batch, length, args.device)
        figures[f"sample_b{batch}"] = {"charrnn": ours, "bf16": fast, "plain": plain}
        for name, figure in ((f"sample chars/s, batch {batch}", ours),
                             ("  bf16 weights (--precision bf16)", fast)):
            rows.append((f"{name}; max logit diff to forward {figure['max_logit_diff']:.1e}",
                         figure["chars_per_sec"], plain["chars_per_sec"],
                         figure["chars_per_sec"] / plain["chars_per_sec"], f">= {goal:,}",
                         figure["chars_per_sec"] >= goal))

    print("data path", flush=True)
    megabytes = 20 if quick else 100
    data = run_section("data", corpus, megabytes)
    figures["data"] = data
    rows.append((f"encode {megabytes} MB (MB/s)", data["mb_per_sec"], data["tokenizers_mb_per_sec"],
                 data["mb_per_sec"] / data["tokenizers_mb_per_sec"], ">= 50",
                 data["mb_per_sec"] >= 50))
    rows.append(("  second run, cache hit (s)", data["cache_hit_seconds"], None, None, "-", True))

    memory = {"train": figures["speed"]["charrnn"]["peak_rss_mb"],
              "sample": figures["sample_b64"]["charrnn"]["peak_rss_mb"],
              "encode": data["peak_rss_mb"]}
    rows.append(("peak RSS train / sample / encode (MB)",
                 f"{memory['train']:.0f} / {memory['sample']:.0f} / {memory['encode']:.0f}",
                 None, None, "no doubling", True))
    regressions = check_memory(memory, quick)
    table = render(rows)
    print("\n" + table)
    write_results(args, corpus, table, figures, time.time() - started)
    print("serving load check (1, 8, 64 streaming clients)", flush=True)
    serve_bench.write(serve_bench.table(serve_bench.run(5.0 if quick else 30.0)),
                      Path(args.results))
    if regressions:
        sys.exit("error: peak memory doubled: " + "; ".join(regressions))


def check_memory(memory: dict, quick: bool) -> list[str]:
    """Compare with the last stored run of the same mode; fail loudly on a doubling."""
    stored = HERE / "results.json"
    regressions = []
    key = "quick" if quick else "full"
    previous = json.loads(stored.read_text()).get(key, {}).get("memory", {}) if stored.exists() else {}
    for name, value in memory.items():
        if name in previous and value > 2 * previous[name]:
            regressions.append(f"{name} {value:.0f} MB, was {previous[name]:.0f} MB")
    return regressions


def render(rows) -> str:
    def cell(value, digits=3):
        if value is None:
            return "-"
        if isinstance(value, str):
            return value
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"

    lines = ["| figure | charrnn | baseline | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for name, ours, base, ratio, goal, met in rows:
        lines.append(f"| {name} | {cell(ours)} | {cell(base)} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} | {goal} | "
                     f"{'yes' if met else 'NO'} |")
    return "\n".join(lines)


def write_results(args, corpus, table, figures, seconds) -> None:
    machine = (f"{cpu_model()} ({cpu_features()}), {os.cpu_count()} cores, "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python "
               f"{platform.python_version()}")
    commands = "\n".join(sorted({f["command"] for f in _walk(figures)}))
    size = Path(corpus).stat().st_size / 1e6
    text = (f"# Benchmark results\n\nMachine: {machine}. Corpus: `{Path(corpus).name}` "
            f"({size:.1f} MB). "
            f"Mode: {'quick' if args.quick else 'full'}. Wall time {seconds:.0f} s. "
            f"Date: {time.strftime('%Y-%m-%d %H:%M')}.\n\n{table}\n\n"
            f"Baselines: the plain loop in bench/baseline.py (val loss at 10 min: the measured "
            f"anchor 1.427 of the plain LSTM 2x512 loop); sampling baseline calls nn.LSTM once "
            f"per character; encoding baseline is tokenizers' encode_batch over lines; the "
            f"fine-tuning rows' baseline is the same preset (cpu-1m) from scratch on the German "
            f"text (bench/section.py new_corpus: {figures['finetune']['new_corpus']}), with as "
            f"many steps as the base model made in its time (a busy machine's speed varies) and "
            f"for the same time; forgetting is the fine-tuned model's loss on the corpus's last "
            f"10% (Model.evaluate) before and after.\n\n"
            f"Commands (run from the repository root):\n\n```\n{commands}\n```\n")
    tried = HERE / "TRIED.md"
    if tried.exists():
        text += "\n" + tried.read_text()
    Path(args.results).write_text(text)
    stored = HERE / "results.json"
    everything = json.loads(stored.read_text()) if stored.exists() else {}
    everything["quick" if args.quick else "full"] = {
        "figures": figures, "memory": {"train": figures["speed"]["charrnn"]["peak_rss_mb"],
                                       "sample": figures["sample_b64"]["charrnn"]["peak_rss_mb"],
                                       "encode": figures["data"]["peak_rss_mb"]}}
    stored.write_text(json.dumps(everything, indent=1))
    print(f"\nwrote {args.results}")


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> str:
    """What decides the precision: native bf16 (AVX512-BF16, AMX) or not, and AVX512/AVX2."""
    from charrnn.device import cpu_has_native_bf16
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((l for l in handle if l.startswith("flags")), "").split()
    except OSError:
        flags = []
    vector = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = "native bf16: bf16 autocast" if cpu_has_native_bf16() else "no native bf16: fp32"
    return f"{vector}, {bf16}"


def _walk(node):
    if isinstance(node, dict):
        if "command" in node:
            yield node
        for value in node.values():
            yield from _walk(value)


if __name__ == "__main__":
    main()
