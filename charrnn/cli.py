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

import click

from . import api
from .errors import CharRNNError, OptionError

class CharRNNGroup(click.Group):
    """Turns every failure a user can cause into one line on stderr and a non-zero exit."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _utf8_stdio()
        try:
            code = super().main(args, prog_name or "charrnn", complete_var,
                                standalone_mode=False, **extra)
            if standalone_mode:
                sys.exit(code or 0)
            return code
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        except click.ClickException as err:
            _fail(err.format_message(), err.exit_code)
        except OptionError as err:
            _fail(f"{_flag(err.name)} {err.problem}", 1)
        except CharRNNError as err:
            _fail(str(err), 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            sys.stderr.close()   # the reader went away (| head): nothing more to say
            sys.exit(0)
        except OSError as err:
            _fail(f"{getattr(err, 'filename', '') or ''} {err.strerror or err}".strip(), 1)


def _fail(message: str, code: int):
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
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
    flags = [item.flag] + [_flag(alias) for alias in spec.aliases if len(alias) > 1]
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
@click.version_option(package_name="charrnn")
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
    click.echo(_summary(result))
    if result.interrupted:
        click.echo(f"stopped by {result.stopped_by}; continue with: "
                   f"{_launcher(result.world_size)} train {corpus} --out {result.out} --resume",
                   err=True)
        sys.exit(code)
    if sample_length > 0:
        model = api.load(result.out, device="cpu")
        click.echo("--- sample ---")
        click.echo(model.generate(result.prime_hint, length=sample_length, temperature=0.8,
                                  seed=1))
        click.echo(f"--- sample more with: {_sample_command(result)}")


STOPPED = {"steps": "the step limit", "epochs": "the epoch limit", "time": "the time limit",
           "callback": "the callback"}


def _summary(result) -> str:
    why = f"stopped by {STOPPED.get(result.stopped_by, result.stopped_by)}" + \
        (f" ({result.limit})" if result.stopped_by in ("steps", "epochs", "time") else "")
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
def sample(checkpoint, prime, device, **options):
    """Generate text from the model in CHECKPOINT (a run folder or a checkpoint folder)."""
    options["stop"] = _arg_text(options["stop"])
    prime, config = _arg_text(prime), api.SampleConfig(**options).validate()
    model = api.load(checkpoint, device=device)
    out = sys.stdout
    if config.num_samples > 1:
        for i, text in enumerate(model.generate(prime, config)):
            out.write(f"--- sample {i + 1} ---\n{text}\n")
        out.flush()
        return
    started = []

    def stream(_, text):
        if not started:         # the prime goes out once generation has begun without error
            out.write(prime)
            started.append(True)
        out.write(text)
        out.flush()

    model.generate(prime, config, on_text=stream)
    out.write(("" if started else prime) + "\n")
    out.flush()


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("textfile", type=click.Path())
@declared_options(api.TrainConfig, only=("device", "encoding", "errors"), device="auto")
def evaluate(checkpoint, textfile, device, encoding, errors):
    """Loss and bits per character of the model in CHECKPOINT on TEXTFILE, read with the
    model's training encoding unless --encoding/--errors say otherwise."""
    model = api.load(checkpoint, device=device)
    result = model.evaluate_file(textfile, encoding, errors)
    if result.unknown_chars:
        click.echo(f"note: {len(result.unknown_chars)} distinct characters of the text are not "
                   "in the model's vocabulary and count as <unk>", err=True)
    click.echo(f"loss {result.loss:.4f} nats/char, {result.bpc:.4f} bits/char over "
               f"{result.num_chars} characters")


@main.command()
@click.argument("checkpoint", type=click.Path())
def info(checkpoint):
    """The configuration and metrics stored in CHECKPOINT."""
    folder, config = api.checkpoint_info(checkpoint)
    click.echo(f"checkpoint: {folder}")
    click.echo(json.dumps(config, indent=2))


@main.command()
@click.argument("checkpoint", type=click.Path())
@declared_options(api.ServeConfig, defaults=True)
def serve(checkpoint, **options):
    """Serve the model in CHECKPOINT over HTTP: a JSON and streaming API (/v1/generate, /docs)
    and a playground page at /. Ctrl-C (or SIGTERM) ends the open streams and stops."""
    settings = api.ServeConfig(**options).validate()

    def ready(url):
        click.echo(f"serving {checkpoint} at {url} (API: {url}docs; Ctrl-C stops)")
        sys.stdout.flush()

    api.serve(checkpoint, settings, ready)
    click.echo("stopped")


@main.command()
@click.argument("checkpoint", type=click.Path())
@declared_options(api.ExportConfig, defaults=True)
def export(checkpoint, out, format, force):
    """Export the model in CHECKPOINT (its one-step function, tokenizer and sampling defaults)
    to the folder --out, after checking it against PyTorch over 1000 characters."""
    api.ExportConfig(out=out, format=format, force=force).validate()
    parity = api.load(checkpoint, device="cpu").export(out, format, force)
    click.echo(parity)
    if not parity.ok:
        click.echo("warning: kept although parity is out of tolerance (--force)", err=True)
    click.echo(f"wrote {out}")
