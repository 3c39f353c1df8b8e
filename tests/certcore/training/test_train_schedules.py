"""Schedules: boundaries, known values from the papers' logs, and the smoothed ramp's shape."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from certcore.schedules import (
    Constant,
    Cosine,
    GeometricRamp,
    LinearRamp,
    SmoothedRamp,
    epoch_time,
    ratio,
    require_nondecreasing,
    require_nonnegative,
)


def test_ratio_follows_the_v2_rule():
    assert ratio(-5.0, 10.0, 20.0) == 0.0
    assert ratio(10.0, 10.0, 20.0) == 0.0
    assert ratio(12.5, 10.0, 20.0) == 0.25
    assert ratio(20.0, 10.0, 20.0) == 1.0
    assert ratio(99.0, 10.0, 20.0) == 1.0
    # b <= a: the ramp is already over, whatever t is (v2: eps = eps_train from the first iteration).
    assert ratio(-1.0, 0.0, 0.0) == 1.0
    assert ratio(0.0, 5.0, 3.0) == 1.0


def test_linear_ramp_boundaries_and_interior():
    ramp = LinearRamp(0.0, 0.3, 2.0, 6.0)
    assert ramp(0.0) == ramp(2.0) == 0.0
    assert ramp(6.0) == ramp(100.0) == pytest.approx(0.3)
    for t in np.linspace(2.0, 6.0, 17):
        assert ramp(float(t)) == pytest.approx(0.3 * (t - 2.0) / 4.0)
    step = LinearRamp(1.0, 5.0, 3.0, 3.0)  # end == start: a step at start
    assert step(2.999) == 1.0 and step(3.0) == 5.0 and step(7.0) == 5.0


def test_linear_ramp_matches_auto_lirpa_linear_scheduler_per_batch():
    # fastibp.md §1.6: 1-based epoch e, batch b (1-based) of n: eps = (e-S)/L*eps + (b-1)*eps/(L*n), capped.
    eps, start, length, n = 0.4, 3, 5, 7
    ramp = LinearRamp(0.0, eps, start - 1, start - 1 + length)
    for e in range(1, 12):
        for b in range(1, n + 1):
            if e < start:
                want = 0.0
            else:
                lo, hi = min((e - start) * eps / length, eps), min((e - start + 1) * eps / length, eps)
                want = lo + (hi - lo) / n * (b - 1)
            assert ramp(epoch_time(e - 1, b - 1, n)) == pytest.approx(want, abs=1e-12)


def test_geometric_ramp_reproduces_the_v2_p_schedule_log():
    # linfdist.md §1d, "--epochs 0,0,100,1250,1300", p 8 -> 1000: logged p 42.90 at epoch 500, 995.81 at 1249.
    p = GeometricRamp(8.0, 1000.0, 100.0, 1250.0)
    assert p(0.0) == p(99.0) == p(100.0) == 8.0
    assert round(p(500.0), 2) == 42.90
    assert round(p(1249.0), 2) == 995.81
    assert p(1250.0) == p(1300.0) == 1000.0


def test_geometric_ramp_is_log_linear():
    ramp = GeometricRamp(0.002, 0.5, 10.0, 30.0)
    ts = np.linspace(10.0, 30.0, 41)
    logs = np.log([ramp(float(t)) for t in ts])
    np.testing.assert_allclose(np.diff(logs, 2), 0.0, atol=1e-12)
    assert logs[0] == pytest.approx(math.log(0.002)) and logs[-1] == pytest.approx(math.log(0.5))


def _auto_lirpa_smoothed(step: int, max_eps: float, start: int, length: int, n: int, mid: float, beta: float):
    """auto_LiRPA's SmoothedScheduler at 0-based global batch ``step``, written from fastibp.md §1.6."""
    init, final = (start - 1) * n, (start + length - 1) * n
    mid_step = int((final - init) * mid) + init
    t = (mid_step - init) ** (beta - 1.0)
    alpha = max_eps / ((final - mid_step) * beta * t + (mid_step - init) * t)
    mid_value = alpha * (mid_step - init) ** beta
    if step <= init:
        return 0.0
    if step < mid_step:
        return alpha * (step - init) ** beta
    return min(mid_value + (max_eps - mid_value) * (step - mid_step) / (final - mid_step), max_eps)


@pytest.mark.parametrize(("mid", "beta"), [(0.25, 4.0), (0.4, 2.0), (0.5, 3.0)])
def test_smoothed_ramp_matches_auto_lirpa_smoothed_scheduler(mid, beta):
    eps, start, length, n = 8.8 / 255, 3, 4, 10  # length * n * mid is a whole number of batches
    ramp = SmoothedRamp(0.0, eps, start - 1, start - 1 + length, mid=mid, beta=beta)
    for step in range((start + length + 2) * n):
        want = _auto_lirpa_smoothed(step, eps, start, length, n, mid, beta)
        assert ramp(step / n) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_smoothed_ramp_is_monotone_continuous_and_c1():
    ramp = SmoothedRamp(0.1, 2.0, 5.0, 25.0, mid=0.3, beta=4.0)
    ts = np.linspace(0.0, 30.0, 30001)
    values = np.array([ramp(float(t)) for t in ts])
    assert np.all(np.diff(values) >= 0.0)
    slope_bound = 1.9 / (20.0 * (1 - 0.3))  # the linear part is the steepest
    assert np.max(np.diff(values)) <= slope_bound * (ts[1] - ts[0]) * (1 + 1e-9)
    assert values[0] == 0.1 and values[-1] == 2.0
    # polynomial part: s(x) = a x^beta, so doubling x multiplies by 2^beta.
    assert ramp.shape(0.2) / ramp.shape(0.1) == pytest.approx(2.0**4)
    # C1 at mid: one-sided slopes agree.
    h = 1e-6
    left = (ramp.shape(0.3) - ramp.shape(0.3 - h)) / h
    right = (ramp.shape(0.3 + h) - ramp.shape(0.3)) / h
    assert left == pytest.approx(right, rel=1e-4)
    assert ramp.shape(0.0) == 0.0 and ramp.shape(1.0) == 1.0


def test_cosine_is_v2_learning_rate():
    lr0, total = 0.03, 1300.0
    lr = Cosine(lr0, 0.0, 0.0, total)
    for t in (0.0, 1.0, 325.0, 650.0, 1299.5, 1300.0):
        assert lr(t) == pytest.approx(0.5 * lr0 * (1 + math.cos(math.pi * ratio(t, 0.0, total))), abs=1e-15)
    assert lr(650.0) == pytest.approx(lr0 / 2)
    assert lr(2000.0) == pytest.approx(0.0, abs=1e-18)


def test_constant():
    assert Constant(0.5)(-3.0) == Constant(0.5)(1e6) == 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinearRamp(math.nan, 1.0, 0.0, 1.0),
        lambda: SmoothedRamp(0.0, 1.0, 0.0, math.inf),
        lambda: LinearRamp(0.0, 1.0, 5.0, 4.0),
        lambda: GeometricRamp(0.0, 1000.0, 0.0, 10.0),
        lambda: GeometricRamp(8.0, -1.0, 0.0, 10.0),
        lambda: SmoothedRamp(0.0, 1.0, 0.0, 10.0, mid=1.0),
        lambda: SmoothedRamp(0.0, 1.0, 0.0, 10.0, beta=0.5),
        lambda: Constant(math.nan),
    ],
)
def test_bad_parameters_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_bad_times_and_types_are_refused():
    with pytest.raises(ValueError, match="finite"):
        LinearRamp(0.0, 1.0, 0.0, 1.0)(math.nan)
    with pytest.raises(TypeError):
        Constant("0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        epoch_time(0, 5, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Constant(1.0).value = 2.0  # type: ignore[misc]


def test_require_nonnegative_and_nondecreasing():
    eps = LinearRamp(0.0, 0.1, 0.0, 10.0)
    assert require_nonnegative(eps, "eps") is eps
    with pytest.raises(ValueError, match="eps must be >= 0"):
        require_nonnegative(LinearRamp(0.1, -0.1, 0.0, 10.0), "eps")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        require_nonnegative(Constant(-1e-3), "eps")
    p = GeometricRamp(8.0, 1000.0, 100.0, 1250.0)
    assert require_nondecreasing(p, "p") is p
    with pytest.raises(ValueError, match="nondecreasing p"):
        require_nondecreasing(GeometricRamp(1000.0, 8.0, 100.0, 1250.0), "p")
