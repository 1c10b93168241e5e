"""The commands that show a model and put it in front of people: ``charrnn viz``, ``plot``,
``novelty`` (charrnn/insight/report.py, plots.py, novelty.py), ``serve`` and ``export`` (serve.py,
export.py), each a thin layer over the Python API; charrnn/cli/commands.py adds them to the group.
"""
from __future__ import annotations

import sys

import click

from charrnn import api
from charrnn.cli.declare import CharRNNCommand, arg_text, declared_options
from charrnn.errors import echo


@click.command(cls=CharRNNCommand)
@click.argument("checkpoint", type=click.Path())
@click.argument("textfile", type=click.Path())
@click.option("--out", default="report.html", show_default=True, help="The report's path.")
@click.option("--compare", multiple=True, type=click.Path(), metavar="CHECKPOINT",
              help="Another model (a run or checkpoint folder) whose gradient curve over the "
                   "same text is drawn on the same axis; repeat for more.")
@declared_options(api.ReportConfig, defaults=True)
@declared_options(api.TrainConfig, only=("device", "encoding", "errors"), device="cpu")
def viz(checkpoint, textfile, out, compare, device, encoding, errors, **options):
    """An HTML report of the model in CHECKPOINT over TEXTFILE (read as training reads text):
    surprisal, the state behind each guess, units correlated with properties of the text, the
    gradient curve (with --compare, other models' too, on one axis)."""
    config = api.ReportConfig(**options).validate()
    model = api.load(checkpoint, device=device)
    echo(model.report_file(textfile, out, encoding, errors, config, compare=compare).describe())


@click.command(cls=CharRNNCommand)
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", default="runs.png", show_default=True, help="Where to write the chart.")
def plot(runs, out):
    """Compare the loss curves of training RUNS (run folders) in one PNG chart."""
    echo(f"wrote {api.plot_runs(list(runs), out)}")


@click.command(cls=CharRNNCommand)
@click.argument("checkpoint", type=click.Path())
@click.option("--prime", default="", help="Text to start from (not checked).")
@declared_options(api.SampleConfig, defaults=True, num_samples=100, only=(
    "length", "temperature", "top_k", "top_p", "seed", "num_samples", "stop"))
@declared_options(api.TrainConfig, only=("device",), device="cpu")
@declared_options(api.NoveltyConfig, defaults=True)
def novelty(checkpoint, prime, device, corpus, cache_dir, **options):
    """Check samples of CHECKPOINT for text copied from its training text (--stop "\\n": lines)."""
    options["stop"], prime = arg_text(options["stop"]), arg_text(prime)
    config = api.SampleConfig(**options).validate()
    model = api.load(checkpoint, device=device)
    training = model.training_text(corpus, cache_dir)      # before sampling: fail early
    echo(training.check(model.generate(prime, config), prime, config.stop == "\n").describe())


@click.command(cls=CharRNNCommand)
@click.argument("checkpoint", type=click.Path())
@declared_options(api.ServeConfig, defaults=True)
def serve(checkpoint, **options):
    """Serve the model in CHECKPOINT over HTTP: a JSON and streaming API (/v1/generate, /docs)
    and a playground page at /. Ctrl-C (or SIGTERM) ends the open streams and stops."""
    settings = api.ServeConfig(**options).validate()

    def ready(url):
        named = f" as {settings.name}" if settings.name else ""
        echo(f"serving {checkpoint}{named} at {url} (API: {url}docs; Ctrl-C stops)")
        sys.stdout.flush()

    api.serve(checkpoint, settings, ready)
    echo("stopped")


@click.command(cls=CharRNNCommand)
@click.argument("checkpoint", type=click.Path())
@declared_options(api.ExportConfig, defaults=True)
def export(checkpoint, out, format, force):
    """Export the model in CHECKPOINT (its one-step function, tokenizer and sampling defaults)
    to the folder --out, after checking it against PyTorch over 1000 characters."""
    api.ExportConfig(out=out, format=format, force=force).validate()
    parity = api.load(checkpoint, device="cpu").export(out, format, force)
    echo(str(parity))
    if not parity.ok:
        echo("warning: kept although parity is out of tolerance (--force)", err=True)
    echo(f"wrote {out}")
