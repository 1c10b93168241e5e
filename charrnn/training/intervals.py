"""What the training loop (charrnn/training/trainer.py) does every N steps besides validating:

    --sample-every N   a short sample into OUT/samples.jsonl, its first line above the progress
                       bar: the same prime (from the validation text), seed and temperature each
                       time, so the samples show what the model learned in between
    --save-every N     a snapshot checkpoint OUT/step-001000/ (a full checkpoint, with
                       trainer_state.pt, written atomically like best/ and last/); --keep K keeps
                       the newest K

Only the writer process samples; every process takes part in a snapshot (its hidden rows and
random state are saved, as for ``last``). Sampling draws from its own seeded generators, never
from torch's global one, so it does not change the training run (an exact resume stays exact).
"""
from __future__ import annotations

import math
from charrnn.config import SampleConfig
from charrnn.training.progress import Bar
from charrnn.training.run import Run
from charrnn.training.runfolder import SAMPLES, snapshot_name
from charrnn.sampling.sampler import generate
from charrnn.training.saving import between_evaluations, save_last

SAMPLE_CHARS = 200          # characters sampled after the prime
SAMPLE_TEMPERATURE = 0.8    # as the sample `charrnn train` prints at the end


def at_step(run: Run, bar: Bar) -> None:
    """After step ``run.state.step``: a snapshot if --save-every is due, a sample if
    --sample-every is due. Raises CharRNNError when the run folder cannot be written."""
    config, state = run.config, run.state
    if config.save_every and state.step % config.save_every == 0:
        save_last(run, between_evaluations(run), snapshot_name(state.step))
        run.folder.prune_snapshots(config.keep)
    if config.sample_every and state.step % config.sample_every == 0 and run.ctx.is_main:
        record = take_sample(run)
        run.folder.log(record, SAMPLES)
        run.folder.board.sample(record)      # --tensorboard: the sample as text
        bar.write(f"step {state.step} sample: {(record['text'].splitlines() or [''])[0]}")


def take_sample(run: Run) -> dict:
    """The record of one sample: step, the latest validation loss (None before the first
    evaluation), prime, temperature, seed (the run's --seed) and text (prime included)."""
    prime = prime_hint(run)
    options = SampleConfig(length=SAMPLE_CHARS, temperature=SAMPLE_TEMPERATURE,
                           seed=run.config.seed)
    with run.average.applied():          # --ema: the model is the average (average.py)
        text = generate(run.model, run.tokenizer, prime, options)[0]
    run.model.train()                    # generate() put it in eval mode
    val_loss = run.state.val_loss
    return {"step": run.state.step,
            "val_loss": round(val_loss, 5) if math.isfinite(val_loss) else None,
            "prime": prime, "temperature": SAMPLE_TEMPERATURE, "seed": run.config.seed,
            "text": text}


def prime_hint(run: Run, most: int = 12) -> str:
    """The start of the first line of the validation text that begins with a letter: a prime
    that the model has seen characters of, whatever the corpus."""
    ids = run.val_batches.inputs[0, :4000]
    text = run.tokenizer.decode(ids)
    for line in text.splitlines()[1:]:
        word = line.strip().split(" ")[0][:most]
        if word[:1].isalpha():
            return word
    return text.strip()[:most].split("\n")[0]
