"""`make bench-full` / `python -m bench.full`: the long figures, resumable across sessions.

Cells, in order (each a fresh process, bench/section.py; ~5.5 hours in all on 2 cores):
(a) the plain-loop sweep (bench/baseline.py SWEEP, 8 configurations) at 60 s, 3 min and 10 min
    on tinyshakespeare, seed 1: the best per budget is the plain loop `make bench` and the
    cells below run beside charrnn (bench/state.py best_plain);
(b) 10-minute medians on tinyshakespeare: 3 seeds of charrnn's defaults and of the best plain
    loop, interleaved (charrnn seed 1, plain seed 1, charrnn seed 2, ...); goal: gap >= 0.08;
(c) the corpus grid: each corpus of bench/corpora.py at 60 s, 3 min and 10 min, charrnn's
    defaults beside the best plain loop at that budget (seed 1); goal: charrnn lower; at 60 s
    also the min cells (bench/mincell.py SHAPES, issue 26);
(d) the fine-tuning section and the serve load check.
Every finished cell goes into bench/full-results.json at once (bench/state.py), so a rerun
skips it (--redo REGEX to run matching cells again) and Ctrl-C loses at most the running cell.
The plain configuration is part of a cell's key: when the sweep picks another, the cells that
ran beside the old pick run again. After each cell the tables go into bench/RESULTS.md
between this command's markers, with the date and the machine of every figure.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from bench import baseline, corpora, markers, mincell
from bench.machine import machine
from bench.state import QUICK_STATE, STATE, State, best_plain, budget_key, sweep_key

HERE = Path(__file__).resolve().parent
SHAKESPEARE = "tinyshakespeare"
BUDGETS, QUICK_BUDGETS = (60.0, 180.0, 600.0), (3.0, 4.0, 6.0)
SEEDS, QUICK_SEEDS = (1, 2, 3), (1, 2)
GOAL_10M, GOAL_GRID = 0.08, 0.0
QUICK_CORPUS_CHARS = 300_000
OVERHEAD = {"charrnn": 40.0, "plain": 15.0}   # seconds a run takes beyond its budget (estimate)


@dataclass
class Cell:
    """One figure: ``key`` in the state file, the bench.section arguments, seconds expected."""
    key: str
    args: tuple
    estimate: float
    run: Optional[Callable[[], dict]] = field(default=None, repr=False)   # instead of args


def training_cell(key: str, kind: str, corpus: str, seconds: float, seed: int, device: str,
                  val_chars: int, config: Optional[dict] = None) -> Cell:
    """A training run of charrnn's defaults (kind "charrnn") or a plain configuration."""
    if kind == "charrnn":
        args = ("quality_defaults", corpus, seconds, seed, device, val_chars)
    else:
        args = ("quality_plain", corpus, seconds, seed, config["cell"], config["hidden"],
                config["batch"], device, val_chars)
    return Cell(key, args, seconds + OVERHEAD[kind])


def plan(state: State, corpus_paths: dict, options) -> Iterator[Cell]:
    """The cells in order. A generator: the plain pick of (b) and (c) is read from the state
    when they come, i.e. after (a) has run in the same invocation."""
    budgets = QUICK_BUDGETS if options.quick else BUDGETS
    seeds = QUICK_SEEDS if options.quick else SEEDS
    shakespeare, device = corpus_paths[SHAKESPEARE], options.device
    for seconds in budgets:                                         # (a) the sweep
        for config in baseline.SWEEP:
            yield training_cell(sweep_key(SHAKESPEARE, seconds, config), "plain", shakespeare,
                                seconds, 1, device, 0, config)
    long = budgets[-1]                                              # (b) 10-minute medians
    pick = baseline.config_name(best_plain(state.cells, long)[0])
    for seed in seeds:
        yield training_cell(f"median/{SHAKESPEARE}/{budget_key(long)}/charrnn/seed{seed}",
                            "charrnn", shakespeare, long, seed, device, 0)
        yield training_cell(f"median/{SHAKESPEARE}/{budget_key(long)}/{pick}/seed{seed}",
                            "plain", shakespeare, long, seed, device, 0,
                            best_plain(state.cells, long)[0])
    for seconds in budgets:                                         # (c) the corpus grid
        config = best_plain(state.cells, seconds)[0]
        for name, path in corpus_paths.items():
            if name == SHAKESPEARE or path is None:
                continue
            val = corpora.val_chars_for(corpora.describe(Path(path))["chars"])
            base = f"grid/{name}/{budget_key(seconds)}"
            yield training_cell(f"{base}/charrnn", "charrnn", path, seconds, 1, device, val)
            yield training_cell(f"{base}/{baseline.config_name(config)}", "plain", path,
                                seconds, 1, device, val, config)
            if seconds == budgets[0]:                               # the min cells
                for shape in mincell.SHAPES:
                    yield Cell(f"{base}/{mincell.shape_name(shape).replace(' ', '-')}",
                               ("quality_min", path, seconds, 1, *shape, device, val,
                                mincell.LR), seconds + OVERHEAD["charrnn"])
    short = budgets[0]                                              # (d)
    yield Cell("finetune", ("finetune", shakespeare, short, device), 5 * short + 90)
    serve_seconds = 5.0 if options.quick else 30.0
    # bench/serve.py runs six parts of ``seconds`` (1, 8 and 64 clients, keep-alive, flood,
    # greedy), the flood FLOOD_EXTRA longer.
    yield Cell("serve", (), 6 * serve_seconds + 5 + 10, run=lambda: _serve(serve_seconds))


def _serve(seconds: float) -> dict:
    from bench import serve
    return serve.run(seconds)


def run_cell(cell: Cell) -> tuple[dict, str]:
    """(figures, command) of one cell, in a fresh process. Raises RuntimeError on failure."""
    if cell.run is not None:
        try:
            return cell.run(), f"python -m bench.serve ({cell.key})"
        except (subprocess.CalledProcessError, OSError, AttributeError) as err:
            raise RuntimeError(f"{cell.key} failed: {err}") from err
    command = [sys.executable, "-m", "bench.section", *map(str, cell.args)]
    result = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{result.stderr[-3000:]}")
    return (json.loads(result.stdout.strip().splitlines()[-1]),
            "python -m bench.section " + " ".join(map(str, cell.args)))


def prepare_corpora(shakespeare: str, quick: bool) -> dict:
    """name -> path (None when a corpus cannot be built here: a note says why). In quick mode
    each is cut to its first QUICK_CORPUS_CHARS characters."""
    paths = {SHAKESPEARE: shakespeare}
    for name in corpora.BUILDERS:
        path, why = corpora.build(name)
        if path is None:
            print(f"note: corpus {name}: {why}", file=sys.stderr)
        paths[name] = path and str(path)
    if quick:
        folder = corpora.OUT / "quick"
        folder.mkdir(parents=True, exist_ok=True)
        for name, path in paths.items():
            if path is not None:
                small = folder / f"{name}.txt"
                small.write_text(Path(path).read_text(encoding="utf-8")[:QUICK_CORPUS_CHARS],
                                 encoding="utf-8")
                paths[name] = str(small)
    return paths


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.full", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=None, help="tinyshakespeare's path (default: the "
                        "shared copy, as `make bench`)")
    parser.add_argument("--quick", action="store_true", help="seconds instead of minutes, "
                        "2 seeds, corpora cut to 300 K characters; state and results in "
                        "bench/full-results-quick.json and bench/RESULTS-quick.md")
    parser.add_argument("--redo", default=None, metavar="REGEX",
                        help="run again the finished cells whose key matches (e.g. 'grid/')")
    parser.add_argument("--only", default=None, metavar="REGEX",
                        help="run only the cells whose key matches")
    parser.add_argument("--list", action="store_true", help="list the cells and exit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--state", default=None, help="the state file")
    parser.add_argument("--results", default=None, help="the results file")
    options = parser.parse_args(argv)
    from bench.__main__ import default_corpus
    state = State(Path(options.state or (QUICK_STATE if options.quick else STATE)))
    results = Path(options.results or HERE / ("RESULTS-quick.md" if options.quick
                                               else "RESULTS.md"))
    paths = prepare_corpora(options.corpus or default_corpus(), options.quick)
    wanted = [c for c in plan(state, paths, options)
              if not options.only or re.search(options.only, c.key)]
    todo = [c for c in wanted if not state.done(c.key, options.redo)]
    print(f"bench-full: {len(wanted) - len(todo)} of {len(wanted)} cells done; about "
          f"{sum(c.estimate for c in todo) / 3600:.1f} h left (the plain picks of later cells "
          f"may change as the sweep finishes). State: {state.path}", flush=True)
    if options.list:
        for cell in wanted:
            print(f"  {'done' if state.done(cell.key) else 'todo'}  {cell.key}")
        return
    failed = run_cells(state, paths, options, results)
    write(state, paths, results, options.quick)
    print(f"wrote {results}")
    if failed:
        sys.exit(f"error: {len(failed)} cells failed (rerun to retry them): {', '.join(failed)}")


def run_cells(state: State, paths: dict, options, results: Path) -> list:
    """Run the cells not done yet, recording each as it finishes; a failing cell is reported
    and skipped (the others go on). Returns the keys that failed. Ctrl-C exits (status 130)
    keeping every finished cell."""
    machine_now, failed, redone = machine(), [], set()
    try:
        for cell in plan(state, paths, options):  # again: later picks follow the sweep
            if (options.only and not re.search(options.only, cell.key)) or cell.key in redone \
                    or state.done(cell.key, options.redo):
                continue
            print(f"[{time.strftime('%H:%M')}] {cell.key} (~{cell.estimate / 60:.0f} min)",
                  flush=True)
            try:
                figures, command = run_cell(cell)
            except RuntimeError as err:
                print(f"error: {err}", file=sys.stderr, flush=True)
                failed.append(cell.key)
                continue
            state.record(cell.key, figures, machine_now, command)
            redone.add(cell.key)
            write(state, paths, results, options.quick)
    except KeyboardInterrupt:
        print("\ninterrupted: the finished cells are kept; rerun to continue", file=sys.stderr)
        sys.exit(130)
    return failed


def write(state: State, paths: dict, results: Path, quick: bool) -> None:
    """The bench-full sections of ``results`` from the state file."""
    from bench import report
    sections = {"bench-full": report.full_section(state, paths, quick)}
    if "finetune" in state.cells:
        sections["fine-tuning"] = report.finetune_section(state.cells["finetune"])
    if "serve" in state.cells:
        from bench import serve
        start, end = serve.START, serve.END
        body = serve.table(state.cells["serve"]["figures"])
        sections["serve load check"] = body.replace(start, "").replace(end, "")
    markers.update(results, sections)


if __name__ == "__main__":
    main()
