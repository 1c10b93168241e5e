"""The command line: a thin click layer over the Python API (charrnn/api.py).

Options are generated from the declarations in charrnn/config.py (``api.declared``): adding a
field there adds its flag here, with its help, type and choices.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time

import click

from . import api
from .errors import (CharRNNError, OptionError, OutputError, PeerError, echo, output_errors,
                     silence_stdout)


class _Guarded:
    """A click command or group whose output failures reach CharRNNGroup.main as
    OutputError, before click's own handler (which exits 1 on a broken pipe) sees them."""

    def make_context(self, *args, **kwargs):
        with output_errors(everything=True):     # parsing, --help, --version
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with output_errors(everything=False):
            return super().invoke(ctx)


class CharRNNCommand(_Guarded, click.Command):
    pass


class CharRNNGroup(_Guarded, click.Group):
    """Turns every failure a user can cause into one line on stderr and a non-zero exit."""

    command_class = CharRNNCommand

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _utf8_stdio()
        try:
            code = super().main(args, prog_name or "charrnn", complete_var,
                                standalone_mode=False, **extra)
            if standalone_mode:
                sys.exit(code or 0)
            return code
        except OutputError as err:    # | head: the reader has what it wanted, say nothing
            silence_stdout()
            if err.error is None:
                sys.exit(0)
            _fail(f"cannot write the output: {err.error.strerror or err.error}", 1)
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        except click.ClickException as err:     # click's usage errors, worded as ours are
            message = err.format_message()
            _fail(message[:1].lower() + message[1:] if message[1:2].islower() else message,
                  err.exit_code)
        except OptionError as err:
            _fail(f"{_flag(err.name)} {err.problem}", 1)
        except PeerError:        # the torchrun process that failed prints the error: let it
            time.sleep(2)        # exit first, so that torchrun names it as the root cause
            sys.exit(1)
        except CharRNNError as err:
            _fail(str(err), 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except OSError as err:
            _fail(f"{getattr(err, 'filename', '') or ''} {err.strerror or err}".strip(), 1)

    def parse_args(self, ctx, args):
        if not args:      # click would print the whole help as the error message
            raise click.UsageError(f"give a command: {', '.join(self.commands)} (charrnn "
                                   "--help says more)", ctx)
        return super().parse_args(ctx, args)


def _fail(message: str, code: int):
    try:
        click.echo(f"error: {' '.join(str(message).split())}", err=True)
    except OSError:
        pass         # stderr is gone too: the exit code still says it
    sys.exit(code)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _utf8_stdio() -> None:
    # Samples hold any Unicode; under LANG=C or a Latin-1 locale, print UTF-8 instead of crashing.
    # Paths the OS gave as undecodable bytes (surrogate escapes) go back out as those bytes.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(encoding="utf-8", errors="surrogateescape")


def _arg_text(value):
    """Text from the command line (--prime, --stop): under LANG=C Python decodes its UTF-8
    bytes as surrogate escapes; decode them as UTF-8. (Paths stay as the OS gave them.)"""
    if value and any("\udc80" <= c <= "\udcff" for c in value):
        try:
            return os.fsencode(value).decode("utf-8")
        except UnicodeDecodeError:
            pass
    return value


class _Parsed(click.ParamType):
    """A declared option with its own parser (durations): CharRNNError -> a click error."""

    def __init__(self, parse, name):
        self.parse, self.name = parse, name

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except CharRNNError as err:
            self.fail(str(err), param, ctx)


def declared_options(*classes, defaults: bool = False, only: tuple = (), **overrides):
    """Click options for every CLI field declared in ``classes`` (or the ones named in
    ``only``). With ``defaults=False`` an option not given is None (so a preset or a saved
    run fills it in); ``overrides`` give other defaults (``device="cpu"``)."""
    def decorate(command):
        items = [item for cls in classes for item in api.declared(cls)
                 if item.spec.cli and (not only or item.name in only)]
        for item in reversed(items):
            default = overrides.get(item.name, item.default if defaults else None)
            command = _click_option(item, default)(command)
        return command
    return decorate


def _click_option(item, default):
    spec = item.spec
    flags = [item.flag] + [_flag(a) if len(a) > 1 else f"-{a}" for a in spec.aliases]  # -n
    if item.type is bool:
        if item.default:     # on unless turned off: --progress/--no-progress
            return click.option(f"{item.flag}/--no-{item.flag[2:]}", item.name,
                                default=default, help=spec.help)
        return click.option(*flags, item.name, is_flag=True, default=default, help=spec.help)
    if spec.choices:
        kind = click.Choice([str(c) for c in spec.choices])
    elif spec.parse:
        kind = _Parsed(spec.parse, spec.metavar or item.type.__name__.upper())
    else:
        kind = {int: click.INT, float: click.FLOAT, str: click.STRING}[item.type]
    return click.option(*flags, item.name, type=kind, default=default, help=spec.help,
                        show_default=default is not None, metavar=spec.metavar)


@click.group(cls=CharRNNGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=api.__version__, prog_name="charrnn")
def main():
    """Character-level recurrent networks: train on any text, then sample from it."""


@main.command()
@click.argument("corpus")
@click.option("--preset", "preset_name", type=click.Choice(["auto", *api.PRESETS]),
              default="auto", show_default=True,
              help="Starting settings; auto: cpu-10m on CPU, gpu-3m on CUDA.")
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


STOPPED = {"steps": "the step limit", "epochs": "the epoch limit", "time": "the time limit",
           "early-stop": "early stopping", "callback": "the callback"}


def _summary(result) -> str:
    why = f"stopped by {STOPPED.get(result.stopped_by, result.stopped_by)}" + \
        (f" ({result.limit})" if result.stopped_by in ("steps", "epochs", "time", "early-stop")
         else "")
    if result.val_loss == result.val_loss:      # not nan: there was an evaluation
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
    if os.environ.get("MAKELEVEL"):        # started by `make train`
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
    options["stop"] = _arg_text(options["stop"])
    prime, config = _arg_text(prime), api.SampleConfig(**options).validate()
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
@click.argument("textfile", type=click.Path())
@click.option("--out", default="report.html", show_default=True, help="The report's path.")
@declared_options(api.ReportConfig, defaults=True)
@declared_options(api.TrainConfig, only=("device", "encoding", "errors"), device="cpu")
def viz(checkpoint, textfile, out, device, encoding, errors, **options):
    """An HTML report of the model in CHECKPOINT over TEXTFILE (read as training reads text):
    surprisal, units correlated with properties of the text, the gradient curve."""
    config = api.ReportConfig(**options).validate()
    model = api.load(checkpoint, device=device)
    click.echo(model.report_file(textfile, out, encoding, errors, config).describe())


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", default="runs.png", show_default=True, help="Where to write the chart.")
def plot(runs, out):
    """Compare the loss curves of training RUNS (run folders) in one PNG chart."""
    click.echo(f"wrote {api.plot_runs(list(runs), out)}")


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--prime", default="", help="Text to start from (not checked).")
@declared_options(api.SampleConfig, defaults=True, num_samples=100, only=(
    "length", "temperature", "top_k", "top_p", "seed", "num_samples", "stop"))
@declared_options(api.TrainConfig, only=("device",), device="cpu")
@declared_options(api.NoveltyConfig, defaults=True)
def novelty(checkpoint, prime, device, corpus, cache_dir, **options):
    """Check samples of CHECKPOINT for text copied from its training text (--stop "\\n": lines)."""
    options["stop"], prime = _arg_text(options["stop"]), _arg_text(prime)
    config = api.SampleConfig(**options).validate()
    model = api.load(checkpoint, device=device)
    training = model.training_text(corpus, cache_dir)      # before sampling: fail early
    click.echo(training.check(model.generate(prime, config), prime, config.stop == "\n").describe())


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
