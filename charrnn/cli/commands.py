"""The command line: a thin click layer over the Python API (charrnn/api.py).

Options are generated from the declarations in charrnn/config.py (``api.declared``): adding a
field there adds its flag here, with its help, type and choices (declare.py). Training,
sampling and evaluating are here; viz, plot, novelty, serve and export in tools.py.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

import click

from charrnn import api
from charrnn.cli import tools as cli_tools
from charrnn.cli.declare import CharRNNGroup, arg_text, declared_options
from charrnn.errors import echo, note


@click.group(cls=CharRNNGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=api.__version__, prog_name="charrnn")
def main():
    """Character-level recurrent networks: train on any text, then sample from it."""


@main.command()
@click.argument("corpus")
@click.option("--preset", "preset_name", type=click.Choice(["auto", *api.PRESETS]),
              default="auto", show_default=True,
              help="Starting settings; auto: picked for the time limit (or steps), the CPU's "
                   "bf16 and the corpus, saying why (gpu-3m on CUDA).")
@declared_options(api.ModelConfig, api.TrainConfig)
@click.option("--sample-length", type=int, default=300, show_default=True,
              help="Characters of the sample printed at the end (0: none).")
def train(corpus, preset_name, sample_length, out, resume, **options):
    """Train a model on CORPUS: a text file, a folder, a glob or hf:NAME[:CONFIG][/SPLIT]."""
    config = api.train_config(corpus, out, preset_name, bool(resume), **options)
    result = api.train_run(corpus, config)
    code = 128 + signal.Signals[result.stopped_by].value if result.interrupted else 0
    if not result.is_main:     # under torchrun, the first process alone reports and samples
        sys.exit(code)
    echo(_summary(result))
    if config.tensorboard:
        echo(f"--- curves: tensorboard --logdir {shlex.quote(str(Path(result.out) / 'tensorboard'))}")
    if result.small_text:
        note(f"{result.epochs:,.0f} passes over a small text: fine-tuning a model trained on a "
             "larger text in the same language usually does better (--init-from; "
             "docs/fine-tuning.md, \"Small texts\")")
    if result.interrupted:
        echo(f"stopped by {result.stopped_by}; continue with: {_launcher(result.world_size)} "
              f"train {shlex.quote(corpus)} --out {shlex.quote(str(result.out))} --resume",
              err=True)
        sys.exit(code)
    if sample_length > 0:
        model = api.load(result.out, device="cpu")
        echo("--- sample ---")
        echo(model.generate(result.prime_hint, length=sample_length, temperature=0.8, seed=1))
        echo(f"--- sample more with: {_sample_command(result)}")


def _summary(result) -> str:
    why = f"stopped by {result.stop_reason}" + \
        (f" ({result.limit})" if result.reached_limit else "")
    if result.val_loss == result.val_loss and not result.reached_limit:   # between validations
        return (f"step {result.step} after {result.elapsed:.0f}s, {why}; the last validation "
                f"gave val loss {result.val_loss:.4f} nats/char, {result.val_bpc:.4f} "
                f"bits/char (best {result.best_val_loss:.4f}); model in {result.out}")
    if result.val_loss == result.val_loss:      # not nan: validated at this step
        return (f"step {result.step}: val loss {result.val_loss:.4f} nats/char, "
                f"{result.val_bpc:.4f} bits/char (best {result.best_val_loss:.4f}) after "
                f"{result.elapsed:.0f}s, {why}; model in {result.out}")
    return (f"step {result.step} after {result.elapsed:.0f}s, {why}, before the first "
            f"validation; model in {result.out}")


def _launcher(world_size: int) -> str:
    """How this command was started, for the commands it prints: torchrun, make or charrnn."""
    if world_size > 1:
        return f"torchrun --nproc-per-node={world_size} -m charrnn"
    found = shutil.which("charrnn")
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if found and os.path.realpath(found) == os.path.realpath(script):
        return "charrnn"
    if os.path.basename(script) == "charrnn" and os.path.isfile(script):
        return _short_path(script)           # the venv's command, e.g. .venv/bin/charrnn
    return f"{_short_path(sys.executable)} -m charrnn"


def _short_path(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _sample_command(result) -> str:
    prime = shlex.quote(result.prime_hint)
    if os.environ.get("CHARRNN_HINT") == "make":    # started by `make train` (Makefile)
        name = os.path.basename(os.path.normpath(str(result.out)))
        return f"make sample NAME={name} PRIME={prime}"
    return f"{_launcher(1)} sample {result.out} --prime {prime} --length 500"


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--prime", default="", help="Text to start from.")
@declared_options(api.SampleConfig, defaults=True)
@declared_options(api.TrainConfig, only=("device",), device="cpu")
@click.option("--novelty", is_flag=True, help="Then report text copied from the corpus (stderr).")
@declared_options(api.NoveltyConfig, defaults=True)
def sample(checkpoint, prime, device, novelty, corpus, cache_dir, **options):
    """Generate text from the model in CHECKPOINT (a run folder or a checkpoint folder)."""
    options["stop"] = arg_text(options["stop"])
    prime, config = arg_text(prime), api.SampleConfig(**options).validate()
    model = api.load(checkpoint, device=device)
    training = model.training_text(corpus, cache_dir) if novelty else None   # fail early
    if config.num_samples > 1:
        texts = model.generate(prime, config)
        for i, text in enumerate(texts):
            echo(f"--- sample {i + 1} ---\n{text}")
        _check_novelty(training, texts, prime, config)
        return
    started = []

    def stream(_, text):
        if not started:         # the prime goes out once generation has begun without error
            echo(prime, nl=False)
            started.append(True)
        echo(text, nl=False)

    texts = model.generate(prime, config, on_text=stream)
    echo("" if started else prime)
    _check_novelty(training, texts, prime, config)


def _check_novelty(training, texts, prime, config):     # on stderr: stdout holds the samples
    if training is not None:
        echo(training.check(texts, prime, config.stop == "\n").describe_samples(), err=True)


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("textfile", type=click.Path())
@declared_options(api.TrainConfig, only=("device", "encoding", "errors", "cache_dir"),
                  device="auto")
def evaluate(checkpoint, textfile, device, encoding, errors, cache_dir):
    """Loss and bits per character of the model in CHECKPOINT on TEXTFILE, read with the
    model's training encoding unless --encoding/--errors say otherwise, through the token
    cache (memory does not grow with the text)."""
    model = api.load(checkpoint, device=device)
    result = model.evaluate_file(textfile, encoding, errors, cache_dir)
    if result.unknown_chars:
        echo(f"note: {len(result.unknown_chars)} distinct characters of the text are not "
              "in the model's vocabulary and count as <unk>", err=True)
    echo(f"loss {result.loss:.4f} nats/char, {result.bpc:.4f} bits/char over "
               f"{result.num_chars} characters")


@main.command()
@click.argument("checkpoint", type=click.Path())
def info(checkpoint):
    """The configuration and metrics stored in CHECKPOINT."""
    folder, config = api.checkpoint_info(checkpoint)
    echo(f"checkpoint: {folder}")
    echo(json.dumps(config, indent=2))
    sample = api.last_sample(folder)
    if sample:
        echo(f"last sample (step {sample.get('step')}, prime {sample.get('prime')!r}, "
             f"temperature {sample.get('temperature')}):\n{sample.get('text', '')}")


for command in (cli_tools.viz, cli_tools.plot, cli_tools.novelty, cli_tools.serve,
                cli_tools.export):
    main.add_command(command)
