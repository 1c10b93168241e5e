"""The command line: a thin click layer over the Python API (charrnn/api.py)."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path

import click

from . import api
from .checkpoint import find_checkpoint, read_config
from .config import PRESETS, TrainConfig, parse_duration, preset
from .corpus import Corpus
from .device import resolve_device
from .distributed import is_main_process
from .errors import CharRNNError
from .trainer import saved_config

MODEL_OPTIONS = ("cell", "layers", "hidden_size", "embed_size", "dropout")
TRAIN_OPTIONS = ("batch_size", "seq_len", "lr", "warmup_steps", "weight_decay", "beta1", "beta2",
                 "clip", "steps",
                 "epochs", "eval_interval", "val_fraction", "device", "precision", "seed",
                 "cache_dir", "encoding", "errors")


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


@click.group(cls=CharRNNGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="charrnn")
def main():
    """Character-level recurrent networks: train on any text, then sample from it."""


@main.command()
@click.argument("corpus")
@click.option("--out", help="Run folder (default: checkpoints/<corpus name>).")
@click.option("--preset", "preset_name", type=click.Choice(["auto", *PRESETS]), default="auto",
              show_default=True, help="Starting settings; auto: cpu-10m on CPU, gpu-3m on CUDA.")
@click.option("--cell", type=click.Choice(["rnn", "gru", "lstm"]))
@click.option("--layers", type=int)
@click.option("--hidden-size", type=int)
@click.option("--embed-size", type=int)
@click.option("--dropout", type=float)
@click.option("--batch-size", type=int, help="Contiguous streams per step.")
@click.option("--seq-len", type=int, help="Truncated-BPTT length.")
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--warmup-steps", type=int)
@click.option("--weight-decay", type=float)
@click.option("--beta1", type=float, help="AdamW's first-moment decay rate.")
@click.option("--beta2", type=float, help="AdamW's second-moment decay rate.")
@click.option("--clip", type=float, help="Gradient-norm clip (0: off).")
@click.option("--steps", type=int, help="Stop after this many steps.")
@click.option("--epochs", type=float, help="Stop after this many passes over the text.")
@click.option("--time-limit", help="Stop after this long, e.g. 90s, 10m, 1h.")
@click.option("--eval-interval", type=int, help="Steps between validations.")
@click.option("--val-fraction", type=float, help="Share of the text (at its end) for validation.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]))
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]),
              help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32.")
@click.option("--seed", type=int)
@click.option("--cache-dir", help="Where token ids are cached (default data/cache).")
@click.option("--encoding", help="Text encoding of the corpus (default utf-8).")
@click.option("--errors", type=click.Choice(["strict", "replace"]),
              help="replace: undecodable bytes become U+FFFD instead of an error.")
@click.option("--overwrite", is_flag=True, help="Replace the model already in --out.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--sample-length", type=int, default=300, show_default=True,
              help="Characters of the sample printed at the end (0: none).")
def train(corpus, out, preset_name, time_limit, overwrite, resume, no_progress, sample_length,
          **options):
    """Train a model on CORPUS: a text file, a folder, a glob or hf:NAME[:CONFIG][/SPLIT]."""
    out = Path(out) if out else Path("checkpoints") / Corpus(corpus).name
    config = _train_config(out, preset_name, resume, options)
    if time_limit is not None:
        config.time_limit = parse_duration(time_limit)
    config.out, config.overwrite, config.resume = str(out), overwrite, resume
    config.progress = not no_progress and config.progress
    result = api.train_run(corpus, config)
    if not is_main_process():     # under torchrun, rank 0 alone reports and samples
        sys.exit(128 + signal.Signals[result.stopped_by].value if result.interrupted else 0)
    if math.isfinite(result.val_loss):
        click.echo(f"step {result.step}: val loss {result.val_loss:.4f} nats/char, "
                   f"{result.val_bpc:.4f} bits/char (best {result.best_val_loss:.4f}) "
                   f"after {result.elapsed:.0f}s; model in {result.out}")
    else:
        click.echo(f"step {result.step} after {result.elapsed:.0f}s, before the first "
                   f"validation; model in {result.out}")
    if result.interrupted:
        click.echo(f"stopped by {result.stopped_by}; continue with: charrnn train {corpus} "
                   f"--out {result.out} --resume", err=True)
        sys.exit(128 + signal.Signals[result.stopped_by].value)
    if sample_length > 0:
        model = api.load(result.out, device="cpu")
        click.echo("--- sample ---")
        click.echo(model.generate("", length=sample_length, temperature=0.8, seed=1))
        click.echo(f"--- sample more with: charrnn sample {result.out} --prime \"ROMEO:\" "
                   "--length 500")


def _train_config(out: Path, preset_name: str, resume: bool, options: dict) -> TrainConfig:
    """The preset (or, with --resume, the saved settings) with the options given on top."""
    given = {k: v for k, v in options.items() if v is not None}
    if resume:
        changed = [k for k in MODEL_OPTIONS if k in given]
        if changed:
            raise CharRNNError(f"--resume keeps the model's shape: drop --{changed[0].replace('_', '-')}")
        config = saved_config(out) if (out / "last").exists() else TrainConfig()
    else:
        if preset_name == "auto":
            preset_name = "gpu-3m" if resolve_device(given.get("device", "auto")).type == "cuda" \
                else "cpu-10m"
        config = preset(preset_name)
    for key in MODEL_OPTIONS:
        if key in given:
            setattr(config.model, key, given[key])
    for key in TRAIN_OPTIONS:
        if key in given:
            setattr(config, key, given[key])
    if resume and ("steps" in given or "epochs" in given):
        config.time_limit = None   # new limits replace the saved ones (--time-limit is applied after)
    return config


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--prime", default="", help="Text to start from.")
@click.option("--length", type=int, default=500, show_default=True, help="Characters to generate.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, help="Sample only from the k most likely characters.")
@click.option("--top-p", type=float, help="Sample from the smallest set with this probability.")
@click.option("--greedy", is_flag=True, help="Always take the most likely character.")
@click.option("--seed", type=int, help="Same seed, same text.")
@click.option("--num-samples", type=int, default=1, show_default=True,
              help="Samples generated together as one batch.")
@click.option("--stop", help="End a sample when it produces this string.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu",
              show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: faster, from bf16 weights (logits within a few hundredths of fp32's).")
def sample(checkpoint, prime, length, temperature, top_k, top_p, greedy, seed, num_samples, stop,
           device, precision):
    """Generate text from the model in CHECKPOINT (a run folder or a checkpoint folder)."""
    prime, stop = _arg_text(prime), _arg_text(stop)
    model = api.load(checkpoint, device=device)
    out = sys.stdout
    if num_samples == 1:
        started = []

        def stream(_, text):
            if not started:         # the prime goes out once generation has begun without error
                out.write(prime)
                started.append(True)
            out.write(text)
            out.flush()

        model.generate(prime, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                       greedy=greedy, seed=seed, stop=stop, on_text=stream, precision=precision)
        out.write(("" if started else prime) + "\n")
    else:
        texts = model.generate(prime, length=length, temperature=temperature, top_k=top_k,
                               top_p=top_p, greedy=greedy, seed=seed, n=num_samples, stop=stop,
                               precision=precision)
        for i, text in enumerate(texts):
            out.write(f"--- sample {i + 1} ---\n{text}\n")
    out.flush()


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("textfile", type=click.Path())
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
def evaluate(checkpoint, textfile, device):
    """Loss and bits per character of the model in CHECKPOINT on TEXTFILE."""
    model = api.load(checkpoint, device=device)
    text = "".join(chunk.text for chunk in Corpus(textfile).chunks())
    unknown = model.tokenizer.unknown_chars(text)
    if unknown:
        click.echo(f"note: {len(unknown)} characters of the text are not in the model's "
                   "vocabulary and count as <unk>", err=True)
    loss, bpc = model.evaluate(text)
    click.echo(f"loss {loss:.4f} nats/char, {bpc:.4f} bits/char over {len(text)} characters")


@main.command()
@click.argument("checkpoint", type=click.Path())
def info(checkpoint):
    """The configuration and metrics stored in CHECKPOINT."""
    folder = find_checkpoint(checkpoint)
    config = read_config(folder)
    click.echo(f"checkpoint: {folder}")
    click.echo(json.dumps(config, indent=2))
