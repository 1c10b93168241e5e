"""`make bench` / `python -m bench`: charrnn beside the best plain PyTorch loop, in one table.

Under 40 minutes on 2 cores: the matmul peak; tinyshakespeare for 60 s (3 seeds) and 10 min
(1 seed), charrnn's defaults for that time limit interleaved with the best plain loop of
bench-full's sweep (bench/state.py best_plain; before the sweep, bench/baseline.py
DEFAULT_PICKS), each evaluated by the benchmark after its budget on the same held-out text;
sampling against its bound; training speed; the data path. The fine-tuning section, the serve
load check and the long figures are in `make bench-full` (bench/full.py).

Each figure runs in a fresh subprocess (bench/section.py), so its peak RSS is its own. The
table goes to stdout and into bench/RESULTS.md (its "make bench" section) with the machine,
its CPU features, the date and the commands; bench/results.json keeps the figures, and a later
run fails loudly if a peak RSS doubles.
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

from bench import markers, mincell
from bench.machine import cpu_features, cpu_model  # noqa: F401  (the names bench used)
from bench.state import QUICK_STATE, STATE, State, best_plain, median

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "tinyshakespeare.txt"
GAP_60S, GAP_10M = 0.10, 0.08
SAMPLE_GOALS = {1: (0.5, "of the memory-bandwidth bound"), 64: (0.8, "of the matmul peak")}
# The cells sampled beside the LSTM 2x512 (issue 26): cpu-1m's LSTM and the best min-cell shapes
# at 60 s (cell, layers, hidden, expansion, MLP ratio; the last two unused by the LSTM, left at
# their defaults; docs/performance.md).
CELLS_SAMPLED = (("lstm", 1, 512, 2, 4),) + mincell.SHAPES


def default_corpus() -> str:
    """tinyshakespeare (the README's figures), else the default corpus, saying so."""
    for path in (SHARED, HERE.parent / "data" / "tinyshakespeare.txt"):
        if path.exists():
            return str(path)
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


def plan(quick: bool) -> dict:
    """Budgets, seeds and lengths of this mode; quick: bench-full --quick's budgets."""
    from bench.full import QUICK_BUDGETS
    if quick:
        return dict(short=QUICK_BUDGETS[0], long=QUICK_BUDGETS[-1], seeds=(1,), length=500,
                    steps=8, megabytes=20, state=QUICK_STATE)
    return dict(short=60.0, long=600.0, seeds=(1, 2, 3), length=3000, steps=30, megabytes=100,
                state=STATE)


def estimate(mode: dict) -> float:
    """Seconds the whole run should take (measured overheads on 2 busy cores)."""
    runs = (2 * len(mode["seeds"]) + 2) * (mode["short"] + 30) + 2 * (mode["long"] + 35)
    return 30 + runs + (150 if mode["length"] > 500 else 40) + 2 * mode["steps"] + \
        mode["megabytes"] * 1.2


def quality(corpus: str, seconds: float, seeds, state: State, device: str) -> dict:
    """charrnn's defaults and the best plain loop at ``seconds``, interleaved per seed."""
    config, why = best_plain(state.cells, seconds)
    runs = {"charrnn": [], "plain": [], "plain_config": config, "plain_why": why}
    for seed in seeds:
        runs["charrnn"].append(run_section("quality_defaults", corpus, seconds, seed, device, 0))
        runs["plain"].append(run_section("quality_plain", corpus, seconds, seed, config["cell"],
                                         config["hidden"], config["batch"], device, 0))
    runs["charrnn_median"] = median([r["val_loss"] for r in runs["charrnn"]])
    runs["plain_median"] = median([r["val_loss"] for r in runs["plain"]])
    return runs


def min_cell_rows(figures: dict, corpus: str, mode: dict, device: str) -> list:
    """The min cells at the short budget (issue 26), seed 1, in the shapes and at the rate the
    60 s sweep found (bench/mincell.py SHAPES, LR), beside charrnn's defaults of seed 1."""
    print(f"min cells after {mode['short']:g} s, seed 1", flush=True)
    rows, runs = [], {}
    figures["quality_min"] = runs
    defaults = figures["quality_short"]["charrnn"][0]["val_loss"]
    for shape in mincell.SHAPES:
        name = mincell.shape_name(shape)
        got = runs[name] = run_section("quality_min", corpus, mode["short"], 1, *shape, device,
                                       0, mincell.LR)
        rows.append((f"  val loss after {mode['short']:g} s, {name} (MLP x{shape[4]}, lr "
                     f"{mincell.LR:g}), seed 1 (baseline: charrnn's defaults, seed 1)",
                     got["val_loss"], defaults, defaults / got["val_loss"], "-", None))
    return rows


def quality_rows(runs: dict, seconds: float, goal: float, note: str = "") -> list:
    from bench.baseline import config_name
    ours, plain = runs["charrnn_median"], runs["plain_median"]
    count = len(runs["charrnn"])
    what = f"median of {count}" if count > 1 else "1 seed"
    rows = [(f"val loss after {seconds:g} s, {what} (nats/char; plain "
             f"{config_name(runs['plain_config'])}){note}", ours, plain, plain / ours,
             f"gap >= {goal:.2f}", plain - ours >= goal),
            (f"  gap plain - charrnn; plain: {runs['plain_why']}", plain - ours, None, None,
             "-", None)]
    if count > 1:
        rows.append(("  seeds " + ", ".join(str(s) for s in range(1, count + 1)),
                     " / ".join(f"{r['val_loss']:.3f}" for r in runs["charrnn"]),
                     " / ".join(f"{r['val_loss']:.3f}" for r in runs["plain"]), None, "-", None))
    rows.append(("  charrnn's defaults: " + runs["charrnn"][0]["settings"], None, None, None,
                 "-", None))
    return rows


def binding_10m(state: State, quick: bool) -> str:
    """bench-full's 10-minute medians (the binding figure), if it has them."""
    from bench.full import BUDGETS, QUICK_BUDGETS, QUICK_SEEDS, SEEDS
    from bench.report import Machines, medians_table
    seconds, seeds = (QUICK_BUDGETS[-1], QUICK_SEEDS) if quick else (BUDGETS[-1], SEEDS)
    lines = medians_table(state, seconds, seeds, Machines())
    gap = [line for line in lines if line.startswith("Gap")]
    return gap[0] if gap else "bench-full has no 10-minute medians yet"


def sample_rows(sampled: dict) -> list:
    rows = []
    for batch, (share_goal, of) in SAMPLE_GOALS.items():
        plain = sampled[f"b{batch}"]["plain"]
        for precision in ("fp32", "bf16"):
            figure = sampled[f"b{batch}"][precision]
            share = figure.get("share_of_bound")
            diff = figure.get("max_logit_diff")
            rows.append((f"sample chars/s, LSTM 2x512, batch {batch}, {precision}"
                         + (f"; max logit diff to forward {diff:.1e}" if diff is not None else ""),
                         figure["chars_per_sec"], plain["chars_per_sec"],
                         figure["chars_per_sec"] / plain["chars_per_sec"],
                         f">= {share_goal:.0%} {of}",
                         None if share is None else share >= share_goal))
            bound = figure.get("bound_chars_per_sec")
            rows.append((f"  bound ({figure.get('bound_kind', '-')}), chars/s; share of it",
                         "-" if share is None else f"{share:.0%}", bound, None, "-", None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=None, help="text file (default: tinyshakespeare)")
    parser.add_argument("--quick", action="store_true",
                        help="seconds instead of minutes, 1 seed: a test of the harness")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", default=None,
                        help="where the table goes (default bench/RESULTS.md; "
                             "bench/RESULTS-quick.md with --quick)")
    args = parser.parse_args()
    args.results = args.results or str(HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md"))
    corpus, mode = args.corpus or default_corpus(), plan(args.quick)
    state = State(mode["state"])
    print(f"make bench: about {estimate(mode) / 60:.0f} minutes; {cpu_model()} "
          f"({cpu_features()}), {os.cpu_count()} cores", flush=True)
    started, rows, figures = time.time(), [], {}

    print("matmul peak", flush=True)
    figures["peak"] = run_section("peak", args.device)
    for key, seconds, seeds, goal in (("quality_short", mode["short"], mode["seeds"], GAP_60S),
                                      ("quality_long", mode["long"], (1,), GAP_10M)):
        print(f"quality after {seconds:g} s, seeds {seeds}, interleaved", flush=True)
        figures[key] = quality(corpus, seconds, seeds, state, args.device)
        note = "" if key == "quality_short" else " [binding: bench-full's median of 3]"
        rows += quality_rows(figures[key], seconds, goal, note)
    rows.append((f"  bench-full {mode['long']:g} s: " + binding_10m(state, args.quick), None,
                 None, None, "-", None))
    rows += min_cell_rows(figures, corpus, mode, args.device)

    rows += speed_rows(figures, mode, args.device) + sampling(figures, mode, args.device)
    rows += data_rows(figures, corpus, mode)
    memory = memory_figures(figures)
    rows.append(("peak RSS (MB): " + ", ".join(memory), " / ".join(f"{v:.0f}" for v in
                 memory.values()), None, None, "no doubling", None))
    regressions = check_memory(memory, args.quick)
    table = render(rows)
    print("\n" + table)
    write_results(args, corpus, table, figures, time.time() - started, memory)
    if regressions:
        sys.exit("error: peak memory doubled: " + "; ".join(regressions))


def speed_rows(figures: dict, mode: dict, device: str) -> list:
    """Training chars/s of charrnn and the plain loop, LSTM 2x512 at batch 64 x 128."""
    print("training speed, LSTM 2x512, batch 64, seq 128", flush=True)
    ours = run_section("speed", mode["steps"], device)
    plain = run_section("speed_plain", mode["steps"], device)
    figures["speed"] = {"charrnn": ours, "plain": plain}
    flops, peak = ours["flops_per_char"], figures["peak"]
    return [("train chars/s (LSTM 2x512, b64)", ours["chars_per_sec"], plain["chars_per_sec"],
             ours["chars_per_sec"] / plain["chars_per_sec"], ">= 1.0x",
             ours["chars_per_sec"] >= plain["chars_per_sec"]),
            ("  training GFLOP/s (fp32 / bf16 matmul peak)", ours["chars_per_sec"] * flops / 1e9,
             plain["chars_per_sec"] * flops / 1e9, None,
             f"peak {peak['gflops']:.0f} / {peak['gflops_bf16']:.0f}", None)]


def sampling(figures: dict, mode: dict, device: str) -> list:
    """Sampling an LSTM 2x512 at batch 1 and 64, fp32 and bf16, and the per-character loop."""
    print("sampling speed, LSTM 2x512", flush=True)
    sampled = figures["sample"] = {}
    for batch in SAMPLE_GOALS:
        sampled[f"b{batch}"] = {p: run_section("sample", batch, mode["length"], device, p)
                                for p in ("fp32", "bf16")}
        sampled[f"b{batch}"]["plain"] = run_section("sample_plain", batch, mode["length"],
                                                    device)
    return sample_rows(sampled) + cell_rows(figures, mode, device)


def cell_rows(figures: dict, mode: dict, device: str) -> list:
    """Sampling chars/s, fp32, of cpu-1m's LSTM and the min cells (CELLS_SAMPLED) at batch 1
    and 64, the LSTM 2x512's figure beside each as the baseline."""
    print("sampling speed, other cells", flush=True)
    rows, cells = [], {}
    figures["sample_cells"] = cells
    for batch in SAMPLE_GOALS:
        for shape in CELLS_SAMPLED:
            name = f"{shape[0]} {shape[1]}x{shape[2]}"
            got = cells[f"{name} b{batch}"] = run_section("sample_cell", batch, mode["length"],
                                                          *shape, device)
            lstm = figures["sample"][f"b{batch}"]["fp32"]["chars_per_sec"]
            rows.append((f"  sample chars/s, {name}, batch {batch}, fp32 (baseline: LSTM "
                         f"2x512)", got["chars_per_sec"], lstm, got["chars_per_sec"] / lstm,
                         "-", None))
    return rows


def data_rows(figures: dict, corpus: str, mode: dict) -> list:
    """Encoding MB/s against tokenizers, and the cache hit."""
    print("data path", flush=True)
    data = figures["data"] = run_section("data", corpus, mode["megabytes"])
    return [(f"encode {mode['megabytes']} MB (MB/s)", data["mb_per_sec"],
             data["tokenizers_mb_per_sec"], data["mb_per_sec"] / data["tokenizers_mb_per_sec"],
             ">= 50", data["mb_per_sec"] >= 50),
            ("  second run, cache hit (s)", data["cache_hit_seconds"], None, None, "-", None)]


def memory_figures(figures: dict) -> dict:
    """Peak RSS (MB) of the training, sampling and encoding processes."""
    short = figures["quality_short"]
    return {"train": figures["speed"]["charrnn"]["peak_rss_mb"],
            "train_defaults_short": max(r["peak_rss_mb"] for r in short["charrnn"]),
            "train_plain_short": max(r["peak_rss_mb"] for r in short["plain"]),
            "sample": figures["sample"]["b64"]["fp32"]["peak_rss_mb"],
            "sample_b1": figures["sample"]["b1"]["fp32"]["peak_rss_mb"],
            "sample_bf16": figures["sample"]["b64"]["bf16"]["peak_rss_mb"],
            "encode": figures["data"]["peak_rss_mb"]}


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
                     f"{'-' if met is None else 'yes' if met else 'NO'} |")
    return "\n".join(lines)


def write_results(args, corpus, table, figures, seconds, memory) -> None:
    machine = (f"{cpu_model()} ({cpu_features()}), {os.cpu_count()} cores, "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python "
               f"{platform.python_version()}")
    commands = "\n".join(sorted({f["command"] for f in _walk(figures)}))
    size = Path(corpus).stat().st_size / 1e6
    section = (f"## `make bench`{' --quick' if args.quick else ''}\n\n"
               f"Machine: {machine}. Corpus: `{Path(corpus).name}` ({size:.1f} MB). Wall time "
               f"{seconds:.0f} s. Date: {time.strftime('%Y-%m-%d %H:%M')}.\n\n{table}\n\n"
               f"Val losses: computed by the benchmark after each budget, for charrnn (its "
               f"best/ weights, charrnn.api.load) and the plain loop alike, on the whole held-out "
               f"last 10% of the corpus, 64 streams from zero state, chunks of 256, hidden state "
               f"carried, fp32. charrnn: its defaults for the time limit (`charrnn train CORPUS "
               f"--time-limit N`, preset auto). Plain: bench/baseline.py, the best of its sweep "
               f"at that budget (`make bench-full`), seeds interleaved with charrnn's. Sampling "
               f"baseline calls nn.LSTM once per character; encoding baseline is tokenizers' "
               f"encode_batch over lines.\n\nCommands (run from the repository root):\n\n```\n"
               f"{commands}\n```")
    markers.update(Path(args.results), {"make bench": section}, first=("make bench",))
    stored = HERE / "results.json"
    everything = json.loads(stored.read_text()) if stored.exists() else {}
    everything["quick" if args.quick else "full"] = {"figures": figures, "memory": memory}
    stored.write_text(json.dumps(everything, indent=1))
    print(f"\nwrote {args.results}")


def _walk(node):
    if isinstance(node, dict):
        if "command" in node:
            yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


if __name__ == "__main__":
    main()
