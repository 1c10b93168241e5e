"""The API's training entry points (``charrnn.api`` re-exports them): a run's settings from a
preset, a saved run and the user's options (``train_config``), then the loop in trainer.py
(``train_run``), and the loss chart once it has ended.

``import charrnn`` does not import the trainer: ``train_run`` imports it when called.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from charrnn.model.checkpoint import saved_train_config
from charrnn.config import (MIN_CELL_OPTIONS, MIN_CELLS, REGULARISERS, ModelConfig,
                            TrainConfig, min_cells_only)
from charrnn.data.corpus import Corpus
from charrnn.model.device import cpu_has_native_bf16, resolve_device
from charrnn.errors import CharRNNError, OptionError, note
from charrnn.options import declared, reject_unknown
from charrnn.training import board
from charrnn.training.presets import Resolved, preset, resolve_defaults
from charrnn.training.runfolder import METRICS

FACT_CHARS = 1 << 20     # the vocabulary of --preset auto is estimated from this much text

if TYPE_CHECKING:
    from charrnn.training.trainer import TrainResult


def train_run(corpus: str, config: TrainConfig,
              callback: Optional[Callable[[int, dict], bool]] = None) -> "TrainResult":
    """Train and return the run's figures without loading the model (what the CLI uses)."""
    # Imported here, not above: loading and sampling must not pay for the training stack.
    from charrnn.training.trainer import train as run_training
    result = run_training(corpus, config, callback)
    draw_loss_png(result.out, result.is_main)     # after the loop: never on the time budget
    return result


def draw_loss_png(run: Union[str, Path], is_main: bool = True) -> Optional[Path]:
    """Write ``run/loss.png`` (charrnn/insight/plots.py) once training has ended; None when the run
    has no evaluation yet or this is not the first process. A failure to draw is a note, not
    an error: the trained model matters more than its chart."""
    if not is_main or not (Path(run) / METRICS).exists():
        return None
    from charrnn.insight import plots   # lazily: matplotlib is slow to import and sampling never needs it
    try:
        return plots.save_loss_png(run)
    except CharRNNError as err:
        note(f"no loss.png: {err}")
        return None


def train_config(corpus: str, out: Optional[str] = None, preset_name: str = "auto",
                 resume: bool = False, **options: Any) -> TrainConfig:
    """The configuration of a run: the preset (``auto``: picked for the limits, device, corpus
    and fine-tune by ``presets.resolve_defaults``, saying why in one note once the settings are
    checked) or, with ``resume``, the run's saved settings, with ``options`` (TrainConfig's and
    ModelConfig's fields; None means not given) on top. A step or epoch limit given without
    a time limit replaces the preset's time limit. With ``init_from`` (a fine-tune) the preset
    gives its training settings at a lower rate (``preset(fine_tune=True)``) and the shape
    comes from the source. Raises CharRNNError (OptionError) for a bad value, and for
    ``init_from`` with ``resume`` or with a shape option."""
    given = {k: v for k, v in options.items() if v is not None}
    if given.get("init_from"):
        _check_fine_tune(given, resume)
    if out is not None and not str(out).strip():
        raise OptionError("out", "must not be empty: give a folder, or leave it out for "
                                 "checkpoints/<corpus name>")
    out = Path(out) if out else Path("checkpoints") / Corpus(corpus).name
    model_fields = {item.name: item for item in declared(ModelConfig)}
    resolved = None
    if resume:
        config = saved_train_config(out / "last") if (out / "last").exists() else TrainConfig()
        # A fixed option may be repeated with the run's own value, not changed.
        fixed = [item for item in [*declared(ModelConfig), *declared(TrainConfig)]
                 if not item.spec.on_resume and item.name in given and given[item.name] !=
                 getattr(config.model if item.name in model_fields else config, item.name)]
        if fixed:
            raise OptionError(fixed[0].name, "cannot change when a run is resumed: drop it "
                                             "(start a new run to change it)")
    else:
        if preset_name == "auto":
            resolved = auto_preset(corpus, given)
            config = resolved.config()
        else:
            config = preset(preset_name, fine_tune=bool(given.get("init_from")))
    reject_unknown("training", given, [f.name for cls in (ModelConfig, TrainConfig)
                                       for f in dataclasses.fields(cls)], list_known=False)
    for key, value in given.items():
        setattr(config.model if key in model_fields else config, key, value)
    for name in MIN_CELL_OPTIONS:        # given, even at its default value (validate sees values)
        if name in given and config.model.cell not in MIN_CELLS:
            raise min_cells_only(name, config.model.cell)
    if ("steps" in given or "epochs" in given) and "time_limit" not in given:
        config.time_limit = None     # the limit the user gives is the one that holds
    config.out, config.resume = str(out), resume
    config.validate()
    if config.tensorboard:
        board.require()               # a missing extra: one line, before any note
    if resolved is not None and os.environ.get("RANK", "0") == "0":   # once under torchrun
        note(resolved.reason)         # after the checks: an error is the only line
    return config


def _check_fine_tune(given: dict, resume: bool) -> None:
    """A fine-tune takes its shape from the source and starts a new run."""
    if resume:
        raise CharRNNError("--init-from starts a new run from another model and --resume "
                           "continues this one: drop one of them")
    shape = [item.name for item in declared(ModelConfig)
             if item.spec.cli and item.name not in REGULARISERS and item.name in given]
    if shape:
        raise OptionError(shape[0], "comes from the --init-from model (its shape cannot "
                                    "change): drop it; dropout (and the other regularisers) "
                                    "and the training settings can")


def auto_preset(corpus: str, given: dict) -> Resolved:
    """What ``--preset auto`` resolves to for ``corpus`` and the options ``given`` (None-free):
    the facts gathered here, cheaply (file sizes and the first block of text, no full read),
    the rule in ``presets.resolve_defaults``. Raises CharRNNError for a corpus it cannot read."""
    chars, vocab = corpus_facts(corpus, given.get("encoding", "utf-8"),
                                given.get("errors", "strict"))

    def number(key):     # a wrong type is options.check's to report, after this
        value = given.get(key)
        return value if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    fraction = number("val_fraction")
    return resolve_defaults(time_limit=number("time_limit"), steps=number("steps"),
                            epochs=number("epochs"),
                            device_type=resolve_device(given.get("device", "auto")).type,
                            corpus_chars=chars, vocab_size=vocab,
                            fine_tune=bool(given.get("init_from")),
                            native_bf16=cpu_has_native_bf16(),
                            precision=given.get("precision", "auto"),
                            val_fraction=fraction if fraction is not None and 0 < fraction < 1
                            else 0.1)


def corpus_facts(corpus: str, encoding: str = "utf-8", errors: str = "strict"
                 ) -> tuple[Optional[int], Optional[int]]:
    """(characters, vocabulary size with <unk>), estimated from the files' sizes and their first
    block (characters per byte there; distinct characters in its first FACT_CHARS): cheap and
    deterministic. (None, None) for a dataset (hf:) or an empty text."""
    source = Corpus(corpus, encoding, errors)
    if source.hf:
        return None, None
    blocks = source.blocks()
    first = next(blocks, None)
    blocks.close()
    if first is None or not first.raw:
        return None, None
    size = sum(path.stat().st_size for path in source.files)
    chars = round(size * len(first.text) / len(first.raw))
    return chars, len(set(first.text[:FACT_CHARS])) + 1
