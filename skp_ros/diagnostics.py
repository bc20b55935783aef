"""Frame counters and timings of the keypoint node, and their /diagnostics message.

The image callback, the worker thread and the diagnostics timer all touch the counters, so
:class:`FrameStats` is a small lock-protected accumulator. Totals never reset (they answer "has
this node ever dropped a frame?"); rates and timings are per diagnostics window (they answer
"how is it doing now?").

Levels follow diagnostic_updater (which has no wheel here, so this is our own code with its
semantics and key names): the output rate is judged like ``FrequencyStatus`` (WARN outside
``[min * (1 - tolerance), max * (1 + tolerance)]``, ERROR for a window without events when a
minimum rate is expected), the age of published stamps like ``TimeStampStatus`` (ERROR for
stamps older than the acceptable delay, more than 1 s in the future, or zero), and an input
silent for longer than ``input_timeout`` is an ERROR (camera down, or a QoS mismatch).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

__all__ = ["FrameStats", "Health", "StatsSnapshot", "build_status", "stamp_problems"]

RATE_TOLERANCE = 0.1
"""FrequencyStatusParam's default tolerance on the expected-rate bounds."""
EARLIEST_ACCEPTABLE_DELAY_S = -1.0
"""TimeStampStatusParam's default: stamps more than 1 s in the future are an error."""

_COUNTERS = (
    "received",
    "processed",
    "dropped",
    "bad",
    "degenerate",
    "outside_roi",
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
    stamp_delay_min_s: float | None = None  # earliest / latest delay of published stamps
    stamp_delay_max_s: float | None = None
    zero_stamp_seen: bool = False
    since_input_s: float | None = None  # seconds since the last image arrived (None: never)

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
    _delays: list[float] = field(default_factory=list)
    _zero_stamp: bool = False
    _last_input: float | None = None

    def arrived(self) -> None:
        """Count one input image as received and restart the input timeout."""
        with self._lock:
            self._add("received", 1)
            self._last_input = time.monotonic()

    def published(self, stamp_delay_s: float | None) -> None:
        """A frame's outputs went out; ``stamp_delay_s`` = now - stamp, None for a zero stamp."""
        with self._lock:
            if stamp_delay_s is None:
                self._zero_stamp = True
            else:
                self._delays.append(stamp_delay_s)

    def restart_input_clock(self) -> None:
        """Start the input timeout afresh (on activate, resume or resubscribe)."""
        with self._lock:
            self._last_input = time.monotonic()

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to one counter (one of received, processed, dropped, bad, ...)."""
        with self._lock:
            self._add(counter, n)

    def _add(self, counter: str, n: int) -> None:
        """Add to the total and the window; the caller holds the lock."""
        self._totals[counter] += n
        self._window[counter] += n

    def processed(self, seconds: float, detector_seconds: float = 0.0) -> None:
        """One frame went through conversion, detection and publishing in ``seconds``.

        ``detector_seconds`` is the model's share of it; the rest (conversion, smoothing,
        message building, publishing) is the node's own overhead, reported separately.
        """
        with self._lock:
            self._add("processed", 1)
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
                stamp_delay_min_s=min(self._delays) if self._delays else None,
                stamp_delay_max_s=max(self._delays) if self._delays else None,
                zero_stamp_seen=self._zero_stamp,
                since_input_s=None if self._last_input is None else now - self._last_input,
            )
            if reset_window:
                self._window = dict.fromkeys(_COUNTERS, 0)
                self._window_start = now
                self._times_ms = []
                self._detector_ms = []
                self._delays = []
                self._zero_stamp = False
        return snap


def _fmt_ms(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Health:
    """What the node expects of its input and output, from its parameters."""

    rate_min_hz: float = 0.0  # 0: no lower bound
    rate_max_hz: float = 0.0  # 0: no upper bound
    input_timeout_s: float = math.inf
    max_stamp_delay_s: float = 5.0
    paused: bool = False  # ~/enable set false
    geometry: str = ""  # what the keypoints' x, y, z are, or why there are none
    geometry_problem: str = ""  # non-empty: 3-D was asked for (use_depth) and is missing
    device_warning: str = ""  # e.g. device auto fell back to the CPU


@dataclass
class _Verdict:
    """The worst level seen so far and the reasons, in order."""

    level: bytes = DiagnosticStatus.OK  # the message's levels are single bytes
    reasons: list[str] = field(default_factory=list)

    def add(self, level: bytes, reason: str) -> None:
        self.level = max(self.level, level)
        self.reasons.append(reason)


def _frequency_values(events: int, total: int, window_s: float, health: Health) -> dict:
    """FrequencyStatus's keys, with its formatting."""
    low = health.rate_min_hz * (1 - RATE_TOLERANCE)
    high = health.rate_max_hz * (1 + RATE_TOLERANCE)
    values = {
        "Events in window": f"{events:d}",
        "Events since startup": f"{total:d}",
        "Duration of window (s)": f"{window_s:f}",
        "Actual frequency (Hz)": f"{events / window_s if window_s > 0 else 0.0:f}",
    }
    if health.rate_max_hz > 0 and health.rate_min_hz == health.rate_max_hz:
        values["Target frequency (Hz)"] = f"{health.rate_min_hz:f}"
    if health.rate_min_hz > 0:
        values["Minimum acceptable frequency (Hz)"] = f"{low:f}"
    if health.rate_max_hz > 0:
        values["Maximum acceptable frequency (Hz)"] = f"{high:f}"
    return values


def _judge_rate(verdict: _Verdict, snap: StatsSnapshot, health: Health) -> None:
    events = snap.window["processed"]
    rate = snap.rate("processed")
    if health.rate_min_hz > 0 and events == 0:
        verdict.add(DiagnosticStatus.ERROR, "no frames processed in the window")
    elif health.rate_min_hz > 0 and rate < health.rate_min_hz * (1 - RATE_TOLERANCE):
        verdict.add(
            DiagnosticStatus.WARN,
            f"output rate {rate:.2f} Hz below expected_rate_min {health.rate_min_hz:g} Hz",
        )
    elif health.rate_max_hz > 0 and rate > health.rate_max_hz * (1 + RATE_TOLERANCE):
        verdict.add(
            DiagnosticStatus.WARN,
            f"output rate {rate:.2f} Hz above expected_rate_max {health.rate_max_hz:g} Hz",
        )


def _timestamp_values(snap: StatsSnapshot, health: Health, counts: Mapping[str, int]) -> dict:
    """TimeStampStatus's keys (delays 0 when nothing was published, as it reports them)."""
    return {
        "Earliest timestamp delay:": f"{snap.stamp_delay_min_s or 0.0:f}",
        "Latest timestamp delay:": f"{snap.stamp_delay_max_s or 0.0:f}",
        "Earliest acceptable timestamp delay:": f"{EARLIEST_ACCEPTABLE_DELAY_S:f}",
        "Latest acceptable timestamp delay:": f"{health.max_stamp_delay_s:f}",
        "Late diagnostic update count:": f"{counts.get('late', 0):d}",
        "Early diagnostic update count:": f"{counts.get('early', 0):d}",
        "Zero seen diagnostic update count:": f"{counts.get('zero', 0):d}",
    }


def stamp_problems(snap: StatsSnapshot, health: Health) -> list[str]:
    """Which of TimeStampStatus's errors the window shows: 'early', 'late', 'zero'."""
    found = []
    if snap.stamp_delay_min_s is not None and snap.stamp_delay_min_s < EARLIEST_ACCEPTABLE_DELAY_S:
        found.append("early")
    if snap.stamp_delay_max_s is not None and snap.stamp_delay_max_s > health.max_stamp_delay_s:
        found.append("late")
    if snap.zero_stamp_seen:
        found.append("zero")
    return found


_STAMP_REASONS = {
    "early": "timestamps too far in future seen",
    "late": "timestamps too far in past seen",
    "zero": "zero timestamp seen",
}


def build_status(
    name: str,
    hardware_id: str,
    state: str,
    subscribed: bool,
    snap: StatsSnapshot,
    info: Mapping[str, object],
    health: Health | None = None,
    stamp_counts: Mapping[str, int] | None = None,
) -> DiagnosticStatus:
    """One DiagnosticStatus: level and message summarize, values carry every number.

    ERROR: no input for longer than the input timeout, no frame processed in a window while
    a minimum rate is expected, or unacceptable stamps (module docstring). WARN: bad frames,
    degenerate maps, failed publishes, a rate outside the expected bounds, 3-D asked for but
    missing, or a device fallback. OK otherwise, and whenever the node is not meant to be
    working (not active, paused through ~/enable, or lazy without subscribers).
    """
    health = health or Health()
    counts = stamp_counts or {}
    win = snap.window
    in_hz, out_hz = snap.rate("received"), snap.rate("processed")
    verdict = _Verdict()
    working = state == "active" and subscribed and not health.paused
    if working:
        since = snap.since_input_s
        if since is not None and since > health.input_timeout_s:
            verdict.add(
                DiagnosticStatus.ERROR,
                f"no input images for {since:.1f} s (input_timeout {health.input_timeout_s:g} "
                "s: camera down, wrong topic or a QoS mismatch)",
            )
        elif win["received"] == 0:
            verdict.add(DiagnosticStatus.WARN, "no input images")
        _judge_rate(verdict, snap, health)
        for problem in stamp_problems(snap, health):
            verdict.add(DiagnosticStatus.ERROR, _STAMP_REASONS[problem])
        if health.geometry_problem:
            verdict.add(DiagnosticStatus.WARN, health.geometry_problem)
    if win["bad"]:
        verdict.add(DiagnosticStatus.WARN, f"{win['bad']} bad frame(s)")
    if win["degenerate"]:
        verdict.add(
            DiagnosticStatus.WARN,
            f"{win['degenerate']} frame(s) with degenerate maps (flat or NaN: the bundle's "
            f"context or the backbone is broken), keypoints not published",
        )
    if win["publish_failures"]:
        verdict.add(DiagnosticStatus.WARN, f"{win['publish_failures']} failed publish(es)")
    if health.device_warning:
        verdict.add(DiagnosticStatus.WARN, health.device_warning)
    if state != "active":
        message = state
    elif health.paused:
        message = "active, paused (~/enable false)"
    elif not subscribed:
        message = "active, idle (lazy: no subscribers)"
    else:
        message = f"active: {in_hz:.1f} Hz in, {out_hz:.1f} Hz out"
        if win["dropped"]:
            message += f", {win['dropped']} dropped (processing slower than input)"
    if verdict.reasons:
        message += "; " + ", ".join(verdict.reasons)
    values = {
        "state": state,
        "subscribed": str(subscribed).lower(),
        "enabled": str(not health.paused).lower(),
        "input_rate_hz": f"{in_hz:.2f}",
        "output_rate_hz": f"{out_hz:.2f}",
        "seconds_since_input": _fmt_ms(snap.since_input_s, 2),
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
        "frames_outside_roi": str(snap.totals["outside_roi"]),
        "publish_failures": str(snap.totals["publish_failures"]),
        "debug_images_published": str(snap.totals["debug_published"]),
        "geometry": health.geometry,
        **_frequency_values(win["processed"], snap.totals["processed"], snap.window_s, health),
        **_timestamp_values(snap, health, counts),
        **{k: str(v) for k, v in info.items()},
    }
    return DiagnosticStatus(
        level=verdict.level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
