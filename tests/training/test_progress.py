import math

import pytest
import torch

from charrnn.training import progress
from charrnn.training.progress import LOSS_READ_EVERY, LossMeter
from charrnn.training.resume import LoopState


def _feed(meter, state, losses):
    seen = []
    for loss in losses:
        state.step += 1
        seen.append(meter.add(torch.tensor(loss)))
    return seen


def test_on_the_cpu_every_step_is_read_and_the_mean_is_exact():
    state = LoopState()
    meter = LossMeter(state, torch.device("cpu"))
    assert _feed(meter, state, [3.0, 2.0, 1.0]) == [3.0, 2.0, 1.0]
    assert meter.take_mean() == pytest.approx(2.0)
    assert (state.loss_sum, state.loss_count) == (0.0, 0)


def test_on_cuda_the_loss_is_read_every_few_steps_and_averages_every_step():
    state = LoopState()
    meter = LossMeter(state, torch.device("cuda"))   # only the device's kind matters here
    losses = [float(i) for i in range(1, 2 * LOSS_READ_EVERY + 4)]
    seen = _feed(meter, state, losses)
    assert seen[0] == 1.0                             # the first step is read at once
    assert seen[1] == 1.0                             # then not again before step 25
    # At step 25 the value read is the mean of the steps 2..25 that were pending.
    assert seen[LOSS_READ_EVERY - 1] == pytest.approx(sum(losses[1:LOSS_READ_EVERY]) /
                                                      (LOSS_READ_EVERY - 1))
    assert meter.take_mean() == pytest.approx(sum(losses) / len(losses))


def test_a_mean_survives_a_resume_through_the_loop_state():
    state = LoopState()
    meter = LossMeter(state, torch.device("cpu"))
    _feed(meter, state, [4.0, 2.0])
    resumed = LoopState.from_dict(state.to_dict())
    again = LossMeter(resumed, torch.device("cpu"))
    _feed(again, resumed, [3.0])
    assert again.take_mean() == pytest.approx(3.0)
    assert math.isnan(LossMeter(LoopState(), torch.device("cpu")).last)


def test_speed_is_the_rate_so_far_until_a_window_is_full_then_per_window(monkeypatch):
    clock = iter([0.0, 0.25, 0.5, 1.0, 1.5, 3.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    speed = progress.Speed(chars_per_step=100)
    assert speed.tick() == 400.0      # a run shorter than a second: 1 step in 0.25 s, not 0
    assert speed.tick() == 400.0      # 2 steps in 0.5 s
    assert speed.tick() == 300.0      # the first full window: 3 steps in 1 s; a new window
    assert speed.tick() == 300.0      # within the second window: the last full one stands
    assert speed.tick() == 100.0      # 2 steps in 2 s
