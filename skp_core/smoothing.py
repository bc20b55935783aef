"""Temporal filters for keypoint streams.

Per-frame detections jitter by a pixel or two even on a still scene, which a robot controller
reads as motion. The One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) removes jitter when a
keypoint is slow and follows it with little lag when it is fast, by raising the low-pass cutoff
with the filtered speed: ``cutoff = min_cutoff + beta * |dx/dt|``. The ROS node keeps it off by
default because it trades latency for steadiness, a choice that depends on the application.

Values are filtered per scalar: each of the K keypoints x 2 coordinates is an independent 1-D
One-Euro filter sharing the timestamps (the paper's per-dimension formulation).

Edge cases, chosen so that a stream can never get stuck in a bad state:

- First sample (or first after `reset`): passed through unchanged; it initializes the state.
- Timestamp not after the previous one (replayed rosbag, clock jump, duplicate stamp):
  the filter resets and passes the sample through, since dt <= 0 has no meaningful speed.
- Number of keypoints (array shape) changes: reset and pass through.
- A keypoint with a non-finite coordinate (NaN/inf, e.g. not detected): its input is passed
  through unchanged and ITS state is reset, so its next finite sample passes through and
  restarts it; the other keypoints keep filtering. The timestamp still advances for all.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

SMOOTHER_KINDS = ("none", "one_euro")


class Smoother(Protocol):
    """A stateful filter over a stream of [K, 2] keypoint arrays with timestamps in seconds."""

    def __call__(self, t: float, values: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


class NoSmoothing:
    """Identity filter, so callers need no special case when smoothing is off."""

    def __call__(self, t: float, values: np.ndarray) -> np.ndarray:
        return np.array(values, copy=True)

    def reset(self) -> None:
        """Nothing to forget."""


def _alpha(te: float, cutoff: np.ndarray | float) -> np.ndarray:
    """Smoothing factor of an exponential low-pass at ``cutoff`` Hz for a sample period ``te``."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / te)


class OneEuroFilter:
    """One-Euro filter vectorized over an array of values (typically K keypoints x 2 coords).

    ``min_cutoff`` (Hz) sets the smoothing of a still keypoint (lower = steadier, more lag);
    ``beta`` sets how fast the cutoff rises with speed (higher = less lag when moving);
    ``d_cutoff`` (Hz) is the cutoff of the speed estimate itself.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if not (math.isfinite(min_cutoff) and min_cutoff > 0):
            raise ValueError(f"min_cutoff must be a positive frequency in Hz, got {min_cutoff}")
        if not (math.isfinite(d_cutoff) and d_cutoff > 0):
            raise ValueError(f"d_cutoff must be a positive frequency in Hz, got {d_cutoff}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the history; the next sample passes through."""
        self._t_prev: float | None = None
        self._x_hat: np.ndarray | None = None  # filtered values, NaN where not initialized
        self._dx_hat: np.ndarray | None = None  # filtered speed per value
        self._valid: np.ndarray | None = None  # per keypoint (row): state is initialized

    def _start(self, t: float, x: np.ndarray, finite: np.ndarray) -> None:
        rows = finite[:, None]
        self._t_prev = t
        self._x_hat = np.where(rows, x, np.nan)
        self._dx_hat = np.zeros_like(x)
        self._valid = finite

    def __call__(self, t: float, values: np.ndarray) -> np.ndarray:
        """Filter one sample taken at time ``t`` (seconds); returns a new [K, 2] array.

        The output has the input's floating dtype (float64 for integer input).
        """
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"timestamp must be finite, got {t}")
        values = np.asarray(values)
        if values.ndim != 2:
            raise ValueError(f"values must be a [K, 2] array, got shape {values.shape}")
        out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
        x = values.astype(np.float64)
        finite = np.isfinite(x).all(axis=1)

        fresh = (
            self._t_prev is None
            or self._x_hat is None
            or self._x_hat.shape != x.shape
            or t <= self._t_prev
        )
        if fresh:
            self._start(t, x, finite)
            return x.astype(out_dtype)
        assert self._t_prev is not None and self._dx_hat is not None and self._valid is not None

        te = t - self._t_prev
        with np.errstate(invalid="ignore", over="ignore"):
            dx = (x - self._x_hat) / te
            a_d = _alpha(te, self.d_cutoff)
            dx_hat = a_d * dx + (1.0 - a_d) * self._dx_hat
            cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
            a = _alpha(te, cutoff)
            x_hat = a * x + (1.0 - a) * self._x_hat

        update = (self._valid & finite)[:, None]
        restart = (~self._valid & finite)[:, None]
        out = np.where(update, x_hat, x)  # restarted and lost keypoints pass through
        self._x_hat = np.where(update, x_hat, np.where(restart, x, np.nan))
        self._dx_hat = np.where(update, dx_hat, 0.0)
        self._valid = finite
        self._t_prev = t
        return out.astype(out_dtype)


def make_smoother(kind: str = "none", **params: Any) -> Smoother:
    """Build a filter by name (``"none"`` or ``"one_euro"``) from config values.

    ``"none"`` ignores ``params``, so a config can keep its filter settings while the filter
    is switched off.
    """
    if kind == "none":
        return NoSmoothing()
    if kind == "one_euro":
        unknown = sorted(set(params) - {"min_cutoff", "beta", "d_cutoff"})
        if unknown:
            raise ValueError(
                f"unknown one_euro parameter(s) {', '.join(unknown)}; "
                f"expected min_cutoff, beta, d_cutoff"
            )
        return OneEuroFilter(**params)
    raise ValueError(f"unknown smoother {kind!r}; choose one of {', '.join(SMOOTHER_KINDS)}")


__all__ = ["SMOOTHER_KINDS", "NoSmoothing", "OneEuroFilter", "Smoother", "make_smoother"]
