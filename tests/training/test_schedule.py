import math

import pytest

from charrnn.config import SCHEDULES
from charrnn.training.schedule import decay, fraction_done, learning_rate, planned_steps


def test_warmup_rises_linearly_to_the_peak():
    rates = [learning_rate(step, 0.0, peak=1.0, warmup_steps=10, min_ratio=0.1)
             for step in range(12)]
    assert rates[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert rates[9] == rates[10] == rates[11] == 1.0


def test_cosine_decays_from_the_peak_to_the_floor():
    assert learning_rate(100, 0.0, 2.0, 10, 0.1) == 2.0
    assert learning_rate(100, 0.5, 2.0, 10, 0.1) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert learning_rate(100, 1.0, 2.0, 10, 0.1) == pytest.approx(0.2)
    rates = [learning_rate(100, d / 20, 2.0, 10, 0.1) for d in range(21)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_no_warmup_starts_at_the_peak():
    assert learning_rate(0, 0.0, 3e-3, 0, 0.1) == 3e-3


def test_progress_follows_steps_or_time_whichever_is_further():
    assert fraction_done(50, 10.0, 100, None) == 0.5
    assert fraction_done(50, 30.0, 100, 40.0) == 0.75
    assert fraction_done(90, 30.0, 100, 40.0) == 0.9
    assert fraction_done(5, 1.0, None, None) == 0.0


def test_a_time_limited_run_reaches_the_floor_at_the_limit():
    limit = 60.0
    at_limit = learning_rate(1234, fraction_done(1234, limit, None, limit), 1.0, 100, 0.1)
    assert at_limit == pytest.approx(0.1)
    beyond = fraction_done(2000, 75.0, None, limit)
    assert beyond == 1.0


def test_planned_steps_is_the_smaller_bound():
    assert planned_steps(None, None, 40) is None
    assert planned_steps(100, None, 40) == 100
    assert planned_steps(None, 2.5, 40) == 100
    assert planned_steps(90, 2.5, 40) == 90
    assert planned_steps(None, 0.01, 40) == math.ceil(0.4)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_falls_from_the_peak_to_the_floor_without_rising(schedule):
    rates = [learning_rate(100, d / 400, 2.0, 10, 0.1, schedule, 0.25) for d in range(401)]
    assert rates[0] == 2.0 and rates[-1] == pytest.approx(0.2, abs=1e-12)
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert learning_rate(3, 0.0, 2.0, 10, 0.1, schedule) == pytest.approx(0.8)   # warming up


def test_linear_falls_in_equal_steps():
    assert learning_rate(100, 0.5, 2.0, 10, 0.0, "linear") == pytest.approx(1.0)
    assert learning_rate(100, 0.25, 2.0, 10, 0.2, "linear") == pytest.approx(2.0 * (0.2 + 0.8 * 0.75))


def test_wsd_is_flat_until_the_knee_then_linear_to_the_floor():
    knee = 1 - 0.2
    flat = [learning_rate(100, d / 100 * knee, 2.0, 10, 0.1, "wsd", 0.2) for d in range(101)]
    assert flat == [2.0] * 101                                   # the peak up to the knee
    halfway = learning_rate(100, knee + 0.1, 2.0, 10, 0.1, "wsd", 0.2)
    assert halfway == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))      # half way down the decay
    assert learning_rate(100, 1.0, 2.0, 10, 0.0, "wsd", 0.2) == 0.0
    # decaying over the whole run is the linear schedule
    assert [decay(d / 10, "wsd", 1.0) for d in range(11)] == \
        pytest.approx([decay(d / 10, "linear") for d in range(11)])


def test_the_default_schedule_is_todays_cosine():
    for done in (0.0, 0.3, 0.77, 1.0):
        assert learning_rate(100, done, 3e-3, 50, 0.1) == \
            3e-3 * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * done)))
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        decay(0.5, "step")
