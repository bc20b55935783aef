"""One-Euro filter: the formulas, its lag/jitter trade-off, and the stream edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skp_core.smoothing import NoSmoothing, OneEuroFilter, make_smoother


def _run(f: OneEuroFilter, times: np.ndarray, signal: np.ndarray) -> np.ndarray:
    return np.stack([f(float(t), x) for t, x in zip(times, signal, strict=True)])


def test_first_sample_passes_through() -> None:
    f = OneEuroFilter()
    x = np.array([[0.1, 0.2], [0.3, 0.4]])
    np.testing.assert_array_equal(f(0.0, x), x)


def test_constant_signal_stays_constant() -> None:
    f = OneEuroFilter(min_cutoff=0.5, beta=0.1)
    x = np.array([[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]])
    for i in range(50):
        np.testing.assert_allclose(f(i / 30, x), x, rtol=0, atol=1e-12)


def test_step_is_smoothed_then_converges() -> None:
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    old, new = np.zeros((1, 2)), np.ones((1, 2))
    for i in range(10):
        f(i / 30, old)
    first = f(10 / 30, new)
    assert np.all((first > 0.0) & (first < 1.0))
    prev = first
    for i in range(11, 400):
        y = f(i / 30, new)
        assert np.all(y >= prev - 1e-12)  # monotone approach, no overshoot
        assert np.all(y <= 1.0)
        prev = y
    np.testing.assert_allclose(prev, new, atol=1e-6)


def test_beta_reduces_lag_on_fast_motion() -> None:
    times = np.arange(60) / 30.0
    ramp = np.stack([np.stack([2.0 * times, -times], axis=1)], axis=1)  # [N, 1, 2]
    slow = _run(OneEuroFilter(min_cutoff=0.5, beta=0.0), times, ramp)
    fast = _run(OneEuroFilter(min_cutoff=0.5, beta=5.0), times, ramp)
    lag_slow = np.abs(slow[-1] - ramp[-1]).max()
    lag_fast = np.abs(fast[-1] - ramp[-1]).max()
    assert lag_fast < 0.5 * lag_slow


def test_large_min_cutoff_is_near_passthrough() -> None:
    rng = np.random.default_rng(0)
    times = np.arange(100) / 30.0
    signal = rng.random((100, 4, 2))
    out = _run(OneEuroFilter(min_cutoff=1e6), times, signal)
    np.testing.assert_allclose(out, signal, atol=1e-3)


def test_matches_hand_computed_one_euro_step() -> None:
    min_cutoff, beta, d_cutoff = 1.0, 0.5, 2.0
    f = OneEuroFilter(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)
    x0, x1, te = 0.2, 0.7, 0.1
    f(1.0, np.array([[x0, x0]]))
    y = f(1.0 + te, np.array([[x1, x0]]))

    def alpha(fc: float) -> float:
        tau = 1.0 / (2.0 * math.pi * fc)
        return 1.0 / (1.0 + tau / te)

    dx = (x1 - x0) / te
    dx_hat = alpha(d_cutoff) * dx + (1 - alpha(d_cutoff)) * 0.0
    a = alpha(min_cutoff + beta * abs(dx_hat))
    expected = a * x1 + (1 - a) * x0
    assert y[0, 0] == pytest.approx(expected, rel=1e-12)
    assert y[0, 1] == pytest.approx(x0, rel=1e-12)  # unmoved coordinate is untouched


def test_timestamp_going_backwards_resets() -> None:
    f = OneEuroFilter(min_cutoff=0.1)
    f(10.0, np.zeros((2, 2)))
    f(10.1, np.zeros((2, 2)))
    jump = np.ones((2, 2))
    np.testing.assert_array_equal(f(5.0, jump), jump)  # replayed bag: pass through
    np.testing.assert_array_equal(f(5.0, 2 * jump), 2 * jump)  # equal stamp: pass through
    # state was restarted from the replayed sample: next output lies between 2 and 3
    y = f(5.1, 3 * jump)
    assert np.all((y > 2.0) & (y < 3.0))


def test_reset_and_changing_number_of_keypoints() -> None:
    f = OneEuroFilter(min_cutoff=0.1)
    f(0.0, np.zeros((2, 2)))
    three = np.ones((3, 2))
    np.testing.assert_array_equal(f(0.1, three), three)
    f.reset()
    np.testing.assert_array_equal(f(0.2, 2 * three), 2 * three)


def test_keypoints_are_independent() -> None:
    rng = np.random.default_rng(1)
    times = np.arange(40) / 30.0
    signal = rng.random((40, 3, 2))
    together = _run(OneEuroFilter(min_cutoff=0.7, beta=0.3), times, signal)
    for k in range(3):
        alone = _run(OneEuroFilter(min_cutoff=0.7, beta=0.3), times, signal[:, k : k + 1])
        np.testing.assert_allclose(together[:, k : k + 1], alone, rtol=0, atol=1e-15)


def test_nan_keypoint_passes_through_and_restarts_without_poisoning_others() -> None:
    f = OneEuroFilter(min_cutoff=0.5)
    ref = OneEuroFilter(min_cutoff=0.5)
    f(0.0, np.array([[0.0, 0.0], [0.0, 0.0]]))
    ref(0.0, np.array([[0.0, 0.0]]))
    y = f(0.1, np.array([[np.nan, 0.5], [1.0, 1.0]]))
    assert math.isnan(y[0, 0]) and y[0, 1] == 0.5  # lost keypoint: input unchanged
    np.testing.assert_allclose(y[1], ref(0.1, np.array([[1.0, 1.0]]))[0])
    y = f(0.2, np.array([[0.8, 0.8], [1.0, 1.0]]))
    np.testing.assert_array_equal(y[0], [0.8, 0.8])  # reappears: restarts by passing through
    np.testing.assert_allclose(y[1], ref(0.2, np.array([[1.0, 1.0]]))[0])
    assert np.isfinite(y).all()
    z = f(0.3, np.array([[1.0, 1.0], [1.0, 1.0]]))
    assert np.all((z[0] > 0.8) & (z[0] < 1.0))  # filtering again from the restart


def test_dtype_and_input_not_modified() -> None:
    f = OneEuroFilter()
    x = np.zeros((2, 2), dtype=np.float32)
    f(0.0, x)
    y = f(0.1, np.ones((2, 2), dtype=np.float32))
    assert y.dtype == np.float32
    assert f(0.2, np.ones((2, 2), dtype=np.int64)).dtype == np.float64
    np.testing.assert_array_equal(x, 0.0)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)
    with pytest.raises(ValueError):
        OneEuroFilter(beta=-1.0)
    with pytest.raises(ValueError):
        OneEuroFilter(d_cutoff=float("nan"))
    with pytest.raises(ValueError):
        OneEuroFilter()(float("nan"), np.zeros((1, 2)))
    with pytest.raises(ValueError):
        OneEuroFilter()(0.0, np.zeros(2))


def test_make_smoother() -> None:
    none = make_smoother("none", min_cutoff=3.0)
    assert isinstance(none, NoSmoothing)
    x = np.array([[0.1, 0.2]])
    y = none(0.0, x)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    euro = make_smoother("one_euro", min_cutoff=2.0, beta=0.1)
    assert isinstance(euro, OneEuroFilter) and euro.min_cutoff == 2.0 and euro.beta == 0.1
    with pytest.raises(ValueError, match="one_euro"):
        make_smoother("kalman")
    with pytest.raises(ValueError, match="gain"):
        make_smoother("one_euro", gain=1.0)
