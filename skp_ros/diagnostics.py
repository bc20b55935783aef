"""Frame counters and timings of the keypoint node, and their /diagnostics message.

The image callback, the worker thread and the diagnostics timer all touch the counters, so
:class:`FrameStats` is a small lock-protected accumulator. Totals never reset (they answer "has
this node ever dropped a frame?"); rates and timings are per diagnostics window (they answer
"how is it doing now?").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

__all__ = ["FrameStats", "StatsSnapshot", "build_status"]

_COUNTERS = (
    "received",
    "processed",
    "dropped",
    "bad",
    "degenerate",
    "publish_failures",
    "debug_published",
)


@dataclass(frozen=True)
class StatsSnapshot:
    """Totals since start, plus what happened in the window that just ended."""

    totals: dict[str, int]
    window: dict[str, int]
    window_s: float
    processing_last_ms: float | None
    processing_mean_ms: float | None
    processing_max_ms: float | None
    detector_mean_ms: float | None = None
    overhead_mean_ms: float | None = None

    def rate(self, counter: str) -> float:
        """Events per second in the window (0 for an empty window)."""
        return self.window[counter] / self.window_s if self.window_s > 0 else 0.0


@dataclass
class FrameStats:
    """Thread-safe counters: received, processed, dropped, bad, degenerate, publish failures, ..."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    _window: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    _window_start: float = field(default_factory=time.monotonic)
    _times_ms: list[float] = field(default_factory=list)
    _detector_ms: list[float] = field(default_factory=list)
    _last_ms: float | None = None

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to one counter (one of received, processed, dropped, bad, ...)."""
        with self._lock:
            self._totals[counter] += n
            self._window[counter] += n

    def processed(self, seconds: float, detector_seconds: float = 0.0) -> None:
        """One frame went through conversion, detection and publishing in ``seconds``.

        ``detector_seconds`` is the model's share of it; the rest (conversion, smoothing,
        message building, publishing) is the node's own overhead, reported separately.
        """
        with self._lock:
            self._totals["processed"] += 1
            self._window["processed"] += 1
            self._last_ms = seconds * 1000.0
            self._times_ms.append(self._last_ms)
            self._detector_ms.append(detector_seconds * 1000.0)

    def total(self, counter: str) -> int:
        with self._lock:
            return self._totals[counter]

    def snapshot(self, reset_window: bool = True) -> StatsSnapshot:
        """Totals and the current window; starts a new window unless told otherwise."""
        now = time.monotonic()
        with self._lock:
            times, detector = self._times_ms, self._detector_ms
            mean = sum(times) / len(times) if times else None
            detector_mean = sum(detector) / len(detector) if detector else None
            snap = StatsSnapshot(
                totals=dict(self._totals),
                window=dict(self._window),
                window_s=now - self._window_start,
                processing_last_ms=self._last_ms,
                processing_mean_ms=mean,
                processing_max_ms=max(times) if times else None,
                detector_mean_ms=detector_mean,
                overhead_mean_ms=None if mean is None else mean - (detector_mean or 0.0),
            )
            if reset_window:
                self._window = dict.fromkeys(_COUNTERS, 0)
                self._window_start = now
                self._times_ms = []
                self._detector_ms = []
        return snap


def _fmt_ms(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def build_status(
    name: str,
    hardware_id: str,
    state: str,
    subscribed: bool,
    snap: StatsSnapshot,
    info: Mapping[str, object],
) -> DiagnosticStatus:
    """One DiagnosticStatus: level and message summarize, values carry every number.

    WARN when frames were bad, had degenerate maps or could not be published in the window, or
    when the node is active and subscribed but no image arrived (camera down, or a QoS
    mismatch); OK otherwise.
    """
    win = snap.window
    in_hz, out_hz = snap.rate("received"), snap.rate("processed")
    level = DiagnosticStatus.OK
    problems = []
    if win["bad"]:
        problems.append(f"{win['bad']} bad frame(s)")
    if win["degenerate"]:
        problems.append(
            f"{win['degenerate']} frame(s) with degenerate maps (flat or NaN: the bundle's "
            f"context or the backbone is broken), keypoints not published"
        )
    if win["publish_failures"]:
        problems.append(f"{win['publish_failures']} failed publish(es)")
    if state == "active" and subscribed and win["received"] == 0:
        problems.append("no input images")
    if problems:
        level = DiagnosticStatus.WARN
    if state != "active":
        message = state
    elif not subscribed:
        message = "active, idle (lazy: no subscribers)"
    else:
        message = f"active: {in_hz:.1f} Hz in, {out_hz:.1f} Hz out"
        if win["dropped"]:
            message += f", {win['dropped']} dropped (processing slower than input)"
    if problems:
        message += "; " + ", ".join(problems)
    values = {
        "state": state,
        "subscribed": str(subscribed).lower(),
        "input_rate_hz": f"{in_hz:.2f}",
        "output_rate_hz": f"{out_hz:.2f}",
        "processing_time_last_ms": _fmt_ms(snap.processing_last_ms),
        "processing_time_mean_ms": _fmt_ms(snap.processing_mean_ms),
        "processing_time_max_ms": _fmt_ms(snap.processing_max_ms),
        # Sub-millisecond figures: the overhead target is a few ms, so keep two decimals.
        "detector_time_mean_ms": _fmt_ms(snap.detector_mean_ms, 2),
        "overhead_time_mean_ms": _fmt_ms(snap.overhead_mean_ms, 2),
        "frames_received": str(snap.totals["received"]),
        "frames_processed": str(snap.totals["processed"]),
        "frames_dropped": str(snap.totals["dropped"]),
        "frames_bad": str(snap.totals["bad"]),
        "frames_degenerate": str(snap.totals["degenerate"]),
        "publish_failures": str(snap.totals["publish_failures"]),
        "debug_images_published": str(snap.totals["debug_published"]),
        **{k: str(v) for k, v in info.items()},
    }
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
