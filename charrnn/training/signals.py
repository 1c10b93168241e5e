"""Why a training run stops (``STOP_REASONS``, in one place), and stopping it cleanly on
Ctrl-C (SIGINT) or SIGTERM: the loop finishes its step, saves ``last`` and returns, so that
``--resume`` continues exactly."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

# Every reason a run stops (TrainResult.stopped_by), in words; a signal stops it too, and its
# name ("SIGINT") is its own reason.
STOP_REASONS = {"steps": "the step limit", "epochs": "the epoch limit",
                "time": "the time limit", "early-stop": "early stopping",
                "callback": "the callback"}
LIMITS = ("steps", "epochs", "time", "early-stop")   # the run's limits: they end with a validation


class Stop:
    """Why the run should stop: a signal's name ("SIGINT"), "callback", or None."""
    reason: Optional[str] = None


@contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """Within the block, SIGINT and SIGTERM set ``stop.reason`` instead of raising; a second
    signal while stopping raises KeyboardInterrupt at once. Off the main thread (where Python
    cannot install handlers) signals keep their usual effect."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.reason:              # a second Ctrl-C while stopping: give up at once
            raise KeyboardInterrupt
        stop.reason = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
