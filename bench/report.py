"""bench-full's tables for bench/RESULTS.md, from the state file (bench/state.py).

Every figure carries its date and a machine letter; the letters are listed under the tables
with the CPU model and features and the torch version of each machine.
"""
from __future__ import annotations

from pathlib import Path

from bench import baseline, corpora, mincell
from bench.state import State, best_plain, budget_key, median, sweep_key

SHAKESPEARE = "tinyshakespeare"


class Machines:
    """Letters A, B, ... for the distinct (CPU, features, torch) of the cells shown."""

    def __init__(self):
        self.letters: dict = {}

    def mark(self, cell: dict) -> str:
        """"A 11-29 13:02": the machine letter and the date of a cell."""
        machine = (cell.get("cpu"), cell.get("features"), cell.get("cores"), cell.get("torch"))
        letter = self.letters.setdefault(machine, chr(ord("A") + len(self.letters)))
        return f"{letter} {cell['date'][5:]}"

    def legend(self) -> str:
        return "\n".join(f"- {letter}: {cpu} ({features}), {cores} cores, torch {torch}"
                         for (cpu, features, cores, torch), letter in self.letters.items())


def _loss(cell) -> str:
    return "-" if cell is None else f"{cell['figures']['val_loss']:.3f}"


def _budget(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


def sweep_table(state: State, budgets, machines: Machines) -> list[str]:
    lines = ["### (a) The plain-loop sweep on tinyshakespeare (seed 1)", "",
             "bench/baseline.py: nn.Embedding(vocab, 64) -> 2-layer cell -> Linear, chunks of "
             "64, AdamW 3e-3, clip 1.0, cosine to 10% over the budget; val loss (nats/char) on "
             "the whole held-out last 10%, computed after the budget. **Bold**: the best at "
             "that budget, the plain loop that stands beside charrnn.", "",
             "| configuration | " + " | ".join(_budget(b) for b in budgets) + " | measured |",
             "|---|" + "---|" * (len(budgets) + 1)]
    best = {b: baseline.config_name(best_plain(state.cells, b)[0]) for b in budgets}
    for config in baseline.SWEEP:
        name, figures, dates = baseline.config_name(config), [], []
        for seconds in budgets:
            cell = state.cells.get(sweep_key(SHAKESPEARE, seconds, config))
            text = _loss(cell)
            figures.append(f"**{text}**" if cell and best[seconds] == name else text)
            dates += [machines.mark(cell)] if cell else []
        lines.append(f"| {name} | " + " | ".join(figures) + f" | {', '.join(dates) or '-'} |")
    for seconds in budgets:
        lines.append("")
        lines.append(f"At {_budget(seconds)}: {best[seconds]}, "
                     f"{best_plain(state.cells, seconds)[1]}.")
    return lines


def medians_table(state: State, seconds: float, seeds, machines: Machines) -> list[str]:
    config, why = best_plain(state.cells, seconds)
    pick = baseline.config_name(config)
    base = f"median/{SHAKESPEARE}/{budget_key(seconds)}"
    rows = {"charrnn defaults": [state.cells.get(f"{base}/charrnn/seed{s}") for s in seeds],
            f"plain {pick}": [state.cells.get(f"{base}/{pick}/seed{s}") for s in seeds]}
    lines = [f"### (b) {_budget(seconds)} on tinyshakespeare, {len(seeds)} seeds, interleaved",
             "", f"Plain loop: {pick} ({why}). charrnn: `charrnn train CORPUS --time-limit "
             f"{seconds:g}s` (preset auto), its best/ weights evaluated like the plain loop's.",
             "", "| run | " + " | ".join(f"seed {s}" for s in seeds) + " | median | measured |",
             "|---|" + "---|" * (len(seeds) + 2)]
    meds = {}
    for name, cells in rows.items():
        meds[name] = median([c["figures"]["val_loss"] if c else None for c in cells])
        lines.append(f"| {name} | " + " | ".join(_loss(c) for c in cells) +
                     f" | {'-' if meds[name] is None else f'{meds[name]:.3f}'} | "
                     f"{', '.join(machines.mark(c) for c in cells if c) or '-'} |")
    ours, plain = meds["charrnn defaults"], meds[f"plain {pick}"]
    settings = next((c["figures"].get("settings") for c in rows["charrnn defaults"] if c), None)
    if ours is not None and plain is not None:
        gap = plain - ours
        lines += ["", f"Gap (plain median - charrnn median): {gap:.3f} nats/char; goal >= "
                      f"{0.08:.2f}: {'met' if gap >= 0.08 else 'NOT met'}."]
    if settings:
        lines += ["", f"charrnn's defaults at this budget: {settings}."]
    return lines


def grid_table(state: State, paths: dict, budgets, machines: Machines) -> list[str]:
    lines = ["### (c) The corpus grid (seed 1): charrnn's defaults against the best plain loop "
             "at each budget", "", "| corpus | budget | charrnn | plain (configuration) | gap "
             "| charrnn lower | measured |", "|---|---|---|---|---|---|---|"]
    about = []
    for name, path in paths.items():
        if name == SHAKESPEARE:
            continue
        if path is None:
            about.append(f"- `{name}`: not built on this machine.")
            continue
        info = corpora.describe(Path(path))
        source = Path(path).with_suffix(".about")
        val = corpora.val_chars_for(info["chars"])
        about.append(f"- `{name}`: {info['megabytes']:.1f} MB, {info['chars']:,} characters, "
                     f"{info['vocab']} distinct; "
                     f"{source.read_text() if source.exists() else 'a prefix (quick mode)'}; "
                     f"val: {'the first ' + format(val, ',') + ' characters of ' if val else ''}"
                     f"its held-out last 10%.")
        for seconds in budgets:
            pick = baseline.config_name(best_plain(state.cells, seconds)[0])
            ours = state.cells.get(f"grid/{name}/{budget_key(seconds)}/charrnn")
            plain = state.cells.get(f"grid/{name}/{budget_key(seconds)}/{pick}")
            gap = met = "-"
            if ours and plain:
                diff = plain["figures"]["val_loss"] - ours["figures"]["val_loss"]
                gap, met = f"{diff:.3f}", "yes" if diff > 0 else "NO"
            dates = ", ".join(machines.mark(c) for c in (ours, plain) if c) or "-"
            lines.append(f"| {name} | {_budget(seconds)} | {_loss(ours)} | {_loss(plain)} "
                         f"({pick}) | {gap} | {met} | {dates} |")
    return lines + [""] + min_cell_table(state, paths, budgets[0], machines) + \
        ["", "Corpora (bench/corpora.py, built without the network):", ""] + about


def min_cell_table(state: State, paths: dict, seconds: float, machines: Machines) -> list[str]:
    """The min cells (bench/mincell.py SHAPES, issue 26) beside charrnn's defaults on each
    corpus of the grid at its first budget."""
    names = [mincell.shape_name(shape) for shape in mincell.SHAPES]
    lines = [f"The min cells at {_budget(seconds)} (rate {mincell.LR:g}; their shapes are the "
             "best of the 60 s sweep on tinyshakespeare, bench/TRIED.md):", "",
             "| corpus | charrnn | " + " | ".join(names) + " | measured |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for name, path in paths.items():
        if name == SHAKESPEARE or path is None:
            continue
        base = f"grid/{name}/{budget_key(seconds)}"
        cells = [state.cells.get(f"{base}/charrnn")] + \
            [state.cells.get(f"{base}/{n.replace(' ', '-')}") for n in names]
        dates = ", ".join(machines.mark(c) for c in cells if c) or "-"
        lines.append(f"| {name} | " + " | ".join(_loss(c) for c in cells) + f" | {dates} |")
    return lines


def full_section(state: State, paths: dict, quick: bool) -> str:
    """The "bench-full" section: sweep, medians, grid and the machines' legend."""
    from bench.full import BUDGETS, QUICK_BUDGETS, QUICK_SEEDS, SEEDS
    budgets = QUICK_BUDGETS if quick else BUDGETS
    machines = Machines()
    lines = [f"## `make bench-full`{' --quick' if quick else ''} (resumable; state in "
             f"bench/{state.path.name})", "",
             "Each figure is one run in a fresh process; \"measured\" gives the machine letter "
             "(below) and the date of each. Absolute figures on a shared machine move by 1.5-2x "
             "between hours: compare within a row, whose runs ran one after the other.", ""]
    lines += sweep_table(state, budgets, machines) + [""]
    lines += medians_table(state, budgets[-1], QUICK_SEEDS if quick else SEEDS, machines)
    lines += [""] + grid_table(state, paths, budgets, machines)
    lines += ["", "Machines:", "", machines.legend() or "- (no figures yet)"]
    return "\n".join(lines)


def finetune_section(cell: dict) -> str:
    """The fine-tuning table (bench/section.py finetune) of bench-full's (d)."""
    t = cell["figures"]
    lines = ["## Fine-tuning (`--init-from`), bench-full (d)", "",
             f"`{cell['command']}`, {cell['date']}, {cell['cpu']} ({cell['features']}), torch "
             f"{cell['torch']}. A model trained on tinyshakespeare (preset cpu-1m: "
             f"{t['base_steps']} steps, val {t['base_val_loss']:.3f}) fine-tuned on "
             f"{t['new_corpus']} ({t['new_corpus_chars']:,} characters, "
             f"{len(t['added_chars'])} characters added to the vocabulary) at the preset's rate "
             f"x{t['lr_scale']:g}, against the same preset from scratch on that text:", "",
             "| figure | fine-tune | from scratch | ratio |", "|---|---|---|---|",
             f"| val loss on the new text, {t['base_steps']} steps each (nats/char) | "
             f"{t['finetune_same_steps_val_loss']:.3f} | {t['scratch_same_steps_val_loss']:.3f} "
             f"| {t['scratch_same_steps_val_loss'] / t['finetune_same_steps_val_loss']:.2f}x |",
             f"| same, the same time each ({t['finetune_steps']} / {t['scratch_steps']} steps) "
             f"| {t['finetune_val_loss']:.3f} | {t['scratch_val_loss']:.3f} | "
             f"{t['scratch_val_loss'] / t['finetune_val_loss']:.2f}x |",
             f"| forgetting: tinyshakespeare val loss before / after | "
             f"{t['old_val_before']:.3f} / {t['old_val_after']:.3f} | - | - |"]
    return "\n".join(lines)
