"""Small texts (issue 29): does a default run keep what generalises? ``python -m bench.small_texts``
(about an hour on 2 cores; resumable: cells already in bench/runs/small-texts.json are kept).

Nine texts: three styles at 20, 80 and 300 KB, each a contiguous slice from the middle of
- prose: the English of the Python language reference (the standard library's pydoc_data);
- verse: Shakespeare's plays (--corpus, default data/shakespeare.txt);
- code: the standard library's Python source (bench/corpora.py).
Two budgets, 1 and 2 minutes at cpu-1m's nominal rate (42 steps/s, presets.py), given as
--steps so that the figures do not depend on the machine's load. Two seeds. Per cell:
- the default run: ``charrnn train TEXT --steps N --seed S`` (preset auto: cpu-1m, its
  dropout, early stopping and planned validations), whose best/ loss is the figure;
- the oracle: the same run validated every ORACLE_INTERVAL steps, stopped only after
  ORACLE_PATIENCE validations (1,000 steps) without a better loss, long past the point where
  an overfitting text's validation loss turns up (it did not come down again in any curve).
Validation changes nothing in training, so the oracle sees the default run's validations and
every point between: its lowest loss is the best any choice of stopping point could keep.
``--part I/N`` runs every Nth cell (two parts side by side, one thread each, use both cores).
Then fine-tuning: a model trained for 1 minute on the whole verse corpus, fine-tuned with the
defaults on each 20 and 80 KB prose and code text (seed 1), against the default run from scratch.
Last, the regularisation auto picks: the 80 and 300 KB texts at 1 minute (seed 1) with the
dropout of SWEEP beside auto's (``--sweep``, after the grid).
Results go into bench/RESULTS.md's "small texts" section.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import markers                      # noqa: E402
from bench.corpora import source_files         # noqa: E402
from bench.machine import machine, now         # noqa: E402

OUT = HERE / "runs" / "small-texts"
STATES = HERE / "runs"            # small-texts-I.json, one per --part
SIZES = {"20 KB": 20_000, "80 KB": 80_000, "300 KB": 300_000}
BUDGETS = {"1 min": 2_520, "2 min": 5_040}       # steps at cpu-1m's nominal 42 steps/s
SEEDS = (1, 2)
ORACLE_INTERVAL = 25
ORACLE_PATIENCE = 40
SWEEP = (0.0, 0.15, 0.3)                         # dropouts tried against auto's pick
GOAL = 0.03                                      # nats/char between best/ and the oracle's lowest


def styles(verse: Path) -> dict[str, str]:
    """Each style's whole text."""
    from pydoc_data.topics import topics
    import sysconfig
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return {"prose": "\n\n".join(topics[key] for key in sorted(topics)),
            "verse": verse.read_text(encoding="utf-8"),
            "code": source_files(stdlib, 2_000_000,
                                 lambda p: p.parts[0] in ("site-packages", "test", "idlelib"))}


def write_texts(verse: Path) -> dict[str, Path]:
    """The nine texts, "prose 20 KB" -> path; a slice from the middle, cut at line ends."""
    (OUT / "texts").mkdir(parents=True, exist_ok=True)
    paths = {}
    for style, text in styles(verse).items():
        for size_name, size in SIZES.items():
            start = text.index("\n", max(0, len(text) // 2 - size // 2)) + 1
            piece = text[start:start + size]
            piece = piece[:piece.rindex("\n") + 1]
            path = OUT / "texts" / f"{style}-{size // 1000}k.txt"
            path.write_text(piece, encoding="utf-8")
            paths[f"{style} {size_name}"] = path
    return paths


def train(text: Path, steps: int, seed: int, out: Path, **options) -> dict:
    """One run with the defaults (preset auto) and ``options``; its figures."""
    from charrnn.api import train_config, train_run
    config = train_config(str(text), str(out), "auto", steps=steps, seed=seed, device="cpu",
                          progress=False, cache_dir=str(OUT / "cache"), overwrite=True,
                          **options)
    result = train_run(str(text), config)
    curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"best": result.best_val_loss, "steps": result.step, "stopped_by": result.stopped_by,
            "epochs": result.epochs, "validations": len(curve),
            "lowest": min(r["val_loss"] for r in curve),
            "lowest_step": min(curve, key=lambda r: r["val_loss"])["step"],
            "interval": config.eval_interval, "early_stop": config.early_stop,
            "dropout": config.model.dropout}


def cells(texts: dict[str, Path]):
    for budget, steps in BUDGETS.items():
        for name, path in texts.items():
            for seed in SEEDS:
                yield f"{name} | {budget} | seed {seed}", path, steps, seed


def run_all(texts: dict[str, Path], verse: Path, state: dict, part: int, parts: int) -> None:
    def save():
        (STATES / f"small-texts-{part}.json").write_text(json.dumps(state, indent=1))
    with tempfile.TemporaryDirectory() as tmp:
        for i, (key, path, steps, seed) in enumerate(cells(texts)):
            if i % parts != part:
                continue
            for kind, options in (("default", {}),
                                  ("oracle", dict(eval_interval=ORACLE_INTERVAL,
                                                  early_stop=ORACLE_PATIENCE))):
                if f"{key} | {kind}" not in state:
                    print(f"{key} | {kind}", flush=True)
                    state[f"{key} | {kind}"] = train(path, steps, seed, Path(tmp) / "run", **options)
                    save()
        if part != parts - 1:
            return
        base = OUT / "base-verse-1m"
        if not (base / "best").exists():
            print("base model: verse, 1 min", flush=True)
            train(verse, BUDGETS["1 min"], 1, base, early_stop=0)
        for name, path in texts.items():
            if name.split()[0] in ("prose", "code") and "300" not in name:
                key = f"{name} | 1 min | seed 1 | fine-tune"
                if key not in state:
                    print(key, flush=True)
                    state[key] = train(path, BUDGETS["1 min"], 1, Path(tmp) / "run",
                                       init_from=str(base))
                    save()


def run_sweep(texts: dict[str, Path], state: dict, part: int, parts: int) -> None:
    """The 80 and 300 KB texts at 1 minute, seed 1, at each dropout of SWEEP."""
    todo = [(name, path, dropout) for name, path in texts.items() if "20 KB" not in name
            for dropout in SWEEP]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, path, dropout) in enumerate(todo):
            key = f"{name} | 1 min | seed 1 | dropout {dropout:g}"
            default = state.get(f"{name} | 1 min | seed 1 | default") or {}
            if i % parts != part or key in state or default.get("dropout") == dropout:
                continue
            print(key, flush=True)
            state[key] = train(path, BUDGETS["1 min"], 1, Path(tmp) / "run", dropout=dropout)
            (STATES / f"small-texts-{part}.json").write_text(json.dumps(state, indent=1))


def sweep_table(texts: dict[str, Path], state: dict) -> str:
    rows = []
    for name in texts:
        default = state.get(f"{name} | 1 min | seed 1 | default")
        if "20 KB" in name or not default:
            continue
        cells = []
        for dropout in SWEEP:
            run = default if default["dropout"] == dropout else \
                state.get(f"{name} | 1 min | seed 1 | dropout {dropout:g}")
            cells.append(f"{run['best']:.4f}" + (" (auto)" if run is default else "")
                         if run else "-")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return (f"| text (1 min, seed 1) | " + " | ".join(f"dropout {d:g}" for d in SWEEP) +
            " |\n|---|" + "---|" * len(SWEEP) + "\n" + "\n".join(rows))


def table(texts: dict[str, Path], state: dict) -> tuple[str, dict]:
    rows, gaps = [], []
    for key, _, _, _ in cells(texts):
        default, oracle = state.get(f"{key} | default"), state.get(f"{key} | oracle")
        if not (default and oracle):
            continue
        gap = default["best"] - oracle["lowest"]
        gaps.append(gap)
        rows.append(f"| {key.replace(' | ', ' | ', 2)} | {default['epochs']:,.0f} | "
                    f"{default['best']:.4f} (step {default['steps']:,}, "
                    f"{default['validations']} val.) | {oracle['lowest']:.4f} (step "
                    f"{oracle['lowest_step']:,}) | {gap:+.4f} | {'yes' if gap <= GOAL else 'NO'} |")
    head = ("| text | budget | seed | epochs run | default best/ (stopped at, validations) | "
            "oracle's lowest (step) | gap | within 0.03 |\n|---|---|---|---|---|---|---|---|")
    summary = {"cells": len(gaps), "within": sum(g <= GOAL for g in gaps),
               "median_gap": statistics.median(gaps) if gaps else None,
               "max_gap": max(gaps) if gaps else None}
    return head + "\n" + "\n".join(rows), summary


def fine_tune_table(texts: dict[str, Path], state: dict) -> str:
    rows = []
    for name in texts:
        tuned = state.get(f"{name} | 1 min | seed 1 | fine-tune")
        scratch = state.get(f"{name} | 1 min | seed 1 | default")
        if tuned and scratch:
            rows.append(f"| {name} | {scratch['best']:.4f} | {tuned['best']:.4f} | "
                        f"{tuned['best'] - scratch['best']:+.4f} |")
    return ("| text (1 min, seed 1) | from scratch, best/ | fine-tuned from verse, best/ | "
            "difference |\n|---|---|---|---|\n" + "\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(HERE.parent / "data" / "shakespeare.txt"),
                        help="the verse corpus (default: data/shakespeare.txt, `make data`)")
    parser.add_argument("--part", default="0/1", help="I/N: run every Nth cell from the Ith")
    parser.add_argument("--table", action="store_true", help="only write the table")
    parser.add_argument("--sweep", action="store_true", help="the dropout sweep (after the grid)")
    args = parser.parse_args()
    part, parts = (int(x) for x in args.part.split("/"))
    verse = Path(args.corpus)
    if not verse.exists():
        sys.exit(f"error: no verse corpus {verse}: run `make data` or pass --corpus FILE")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    texts = write_texts(verse)
    own = STATES / f"small-texts-{part}.json"
    if args.sweep:           # needs the grid's default runs, from every part's file
        state = {}
        for path in sorted(STATES.glob("small-texts-*.json")):
            state.update(json.loads(path.read_text()))
        run_sweep(texts, state, part, parts)
    elif not args.table:
        run_all(texts, verse, json.loads(own.read_text()) if own.exists() else {}, part, parts)
    state = {}
    for path in sorted(STATES.glob("small-texts-*.json")):
        state.update(json.loads(path.read_text()))
    rows, summary = table(texts, state)
    info = machine()
    section = (f"## Small texts (`python -m bench.small_texts`)\n\n"
               f"Machine: {info['cpu']} ({info['features']}), {info['cores']} cores, torch "
               f"{info['torch']}. Date: {now()}. Verse from `{verse.name}`.\n\n"
               f"Prose is the Python language reference, code the standard library's source, "
               f"each text a slice from the middle. Budgets are steps ("
               f"{BUDGETS['1 min']:,} and {BUDGETS['2 min']:,}: 1 and 2 minutes at cpu-1m's "
               f"nominal rate), so no figure depends on the machine's load. The default run "
               f"is `charrnn train TEXT --steps N --seed S`; its figure is best/'s validation "
               f"loss. The oracle is the same run validated every {ORACLE_INTERVAL} steps and "
               f"stopped {ORACLE_PATIENCE} validations after its lowest loss.\n\n"
               f"{summary['within']} of {summary['cells']} cells within {GOAL} nats/char of "
               f"the oracle; median gap {summary['median_gap']:+.4f}, largest "
               f"{summary['max_gap']:+.4f} (nats/char).\n\n{rows}\n\n"
               f"Fine-tuning against training from scratch, validation loss of best/ "
               f"(nats/char):\n\n{fine_tune_table(texts, state)}\n\n"
               f"The dropout auto picks against others, validation loss of best/ (nats/char):"
               f"\n\n{sweep_table(texts, state)}\n")
    markers.update(HERE / "RESULTS.md", {"small texts": section})
    print(section)


if __name__ == "__main__":
    main()
