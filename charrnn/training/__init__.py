"""Training: truncated back-propagation through time, from a corpus to a run folder.

    launch.py      train_config / train_run: settings from a preset and the options, then the loop
    trainer.py     the loop itself (read it top to bottom)
    run.py         everything the loop needs, built once (folder, ids, batches, model, optimizer)
    schedule.py    the learning rate as pure functions
    saving.py      what happens at an evaluation and at the end: validate, save best/ and last/
    runfolder.py   the run folder: best/, last/, metrics.jsonl, snapshots
    resume.py      what an exact --resume needs beyond the weights
    intervals.py   --sample-every and --save-every
    progress.py    the loss meter, speed and progress bar
    gradients.py   the gradient norm before clipping: measured, clipped with, summed on the device
    board.py       --tensorboard: the records and samples as TensorBoard events
    deadline.py    when a --time-limit run must stop
    presets.py     named settings (cpu-1m, cpu-3m, cpu-10m, gpu-3m, tiny) and the auto pick
    finetune.py    --init-from: a trained model adapted to a new text
    average.py     the weight average (EMA)
    memory.py      will the run fit in memory?
    distributed.py several processes under torchrun (DDP)
    signals.py     why a run stops (STOP_REASONS); Ctrl-C and SIGTERM stop cleanly
"""
