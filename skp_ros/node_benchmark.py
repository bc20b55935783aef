"""`skp-node-bench`: end-to-end latency, throughput and overhead of the running keypoint node.

Why: the model's own speed is `skp-bench`'s business; a robot also pays for DDS transport,
image conversion, smoothing and message building around it, and must never build a backlog
when the camera is faster than the model. This tool starts the real node as a child process
(loopback-only ROS environment, its own domain), publishes pre-generated 640x480 rgb8 sweep
frames at each requested rate, matches every keypoint message to its image by header stamp,
and reads the node's own detector / overhead times from /diagnostics. It then times the
conversions in-process. Target: node overhead (node time minus detector time) under 3 ms per
frame, and flat latency (no backlog) when the input rate exceeds the processing rate.

Figures are printed, never asserted: speed depends on the machine.

Usage: skp-node-bench [--bundle DIR] [--rates 2,10,30,auto] [--seconds 8] [--device cpu]
       [--param NAME:=VALUE ...]
``auto`` is twice the processing rate measured during the warm-up (at most AUTO_RATE_MAX_HZ),
so one rate always exceeds what the node can process, whatever the machine. Without
``--bundle`` a tiny bundle for the built-in ``tiny`` backbone is written to a temp dir.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skp_ros.process import (
    child_env,
    log_tail,
    node_command,
    start_child,
    stop_child,
    wait_for,
)
from skp_ros.ros_env import apply_local_ros_env, local_ros_env
from skp_ros.tiny_bundle import make_tiny_bundle

__all__ = [
    "FRAME_COLUMNS",
    "MICRO_LABELS",
    "OVERHEAD_TARGET_MS",
    "TIME_COLUMNS",
    "main",
]

NODE_NAME = "skp_keypoints"
IMAGE_TOPIC = "/skp_node_bench/image_raw"
KEYPOINTS_TOPIC = f"/{NODE_NAME}/keypoints"
WIDTH, HEIGHT = 640, 480
OVERHEAD_TARGET_MS = 3.0
AUTO_RATE_MAX_HZ = 300.0
DIAGNOSTICS_PERIOD_S = 0.5
STARTUP_TIMEOUT_S = 180.0  # the node imports torch and builds the model; a ceiling, not a sleep
SETTLE_TIMEOUT_S = 60.0
WARMUP_RESEND_S = 0.25
POLL_S = 0.005
BACKLOG_RATIO = 1.5  # last third slower than this x first third (+ slack) means a backlog
BACKLOG_SLACK_MS = 5.0
FRAME_COLUMNS = (
    "rate_Hz",
    "in_Hz",
    "sent",
    "received",
    "processed",
    "dropped",
    "bad",
    "lost",
    "matched",
    "out_Hz",
)
TIME_COLUMNS = (
    "rate_Hz",
    "p50",
    "p90",
    "p99",
    "detector",
    "overhead",
    "under_3ms",
    "p50-det",
    "first_3rd",
    "last_3rd",
    "backlog",
)
MICRO_LABELS = (
    "image_msg_to_rgb 640x480 rgb8",
    "image_msg_to_rgb 640x480 bgr8",
    "keypoints_to_cloud 10 keypoints",
    "serialize 640x480 Image (publish side)",
    "deserialize 640x480 Image (take side)",
)


class BenchmarkError(RuntimeError):
    """The benchmark could not run (node died, never answered); the message says why."""


# --------------------------------------------------------------------------- conversions


def _per_call_us(fn: Callable[[], object], budget_s: float, repeats: int = 5) -> float:
    """Median over `repeats` of the mean time per call (µs), each repeat lasting ~`budget_s`."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    iterations = int(min(max(budget_s / once, 10), 200_000))
    results = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        results.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(results)


def measure_conversions(rgb: np.ndarray, budget_s: float) -> dict[str, float]:
    """µs per call of what the node does around the model, timed in this process.

    The node's in-node overhead is mostly these calls; (de)serialization is the Python side of
    the transport, paid outside the node's timed region (in its executor and in the camera).
    """
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from skp_ros.image_conversion import image_msg_to_rgb, rgb_to_image_msg
    from skp_ros.keypoint_msgs import keypoints_to_cloud

    header = Header(frame_id="bench")
    rgb_msg = rgb_to_image_msg(rgb, header, "rgb8")
    bgr_msg = rgb_to_image_msg(rgb, header, "bgr8")
    rng = np.random.default_rng(0)
    ids = np.arange(10, dtype=np.int32)
    uv = rng.uniform(0, 480, size=(10, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, size=10).astype(np.float32)
    wire = serialize_message(rgb_msg)
    calls: dict[str, Callable[[], object]] = {
        MICRO_LABELS[0]: lambda: image_msg_to_rgb(rgb_msg),
        MICRO_LABELS[1]: lambda: image_msg_to_rgb(bgr_msg),
        MICRO_LABELS[2]: lambda: keypoints_to_cloud(header, ids, uv, scores),
        MICRO_LABELS[3]: lambda: serialize_message(rgb_msg),
        MICRO_LABELS[4]: lambda: deserialize_message(wire, Image),
    }
    return {label: _per_call_us(fn, budget_s) for label, fn in calls.items()}


# --------------------------------------------------------------------------- ROS client


def _stamp_ns(header: Any) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` (the executor spins in its own thread) until true, or raise."""
    if not wait_for(condition, timeout, poll=POLL_S):
        raise BenchmarkError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class PhaseResult:
    """What one input rate gave: counts from both ends, latencies, node times."""

    rate_hz: float
    in_hz: float
    sent: int
    received: int
    processed: int
    dropped: int
    bad: int
    matched: int
    out_hz: float
    latencies_ms: list[float]  # matched frames, in publish order
    detector_ms: float | None
    overhead_ms: float | None


class BenchClient:
    """This process's ROS side: the camera publisher, the keypoint and diagnostics listeners."""

    def __init__(self, frames: Sequence[Any], node_alive: Callable[[], bool]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image, PointCloud2

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("skp_node_bench", context=self.context)
        self.frames = list(frames)
        self.node_alive = node_alive
        # A camera driver's QoS (best effort, shallow), as the node expects by default.
        self.publisher = self.node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.arrivals: list[tuple[int, float]] = []  # (stamp ns, receive time)
        self.keypoints = self.node.create_subscription(
            PointCloud2,
            KEYPOINTS_TOPIC,
            lambda msg: self.arrivals.append((_stamp_ns(msg.header), time.perf_counter())),
            QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on_diagnostics, QoSProfile(depth=100)
        )
        self._last_stamp = 0
        self.publish_failures = 0
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._spinner = threading.Thread(target=self._spin, name="bench_spin", daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith(f"/{NODE_NAME}:"):
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def close(self) -> None:
        self._stop.set()
        self._spinner.join(5.0)
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    def _check_node(self) -> None:
        if not self.node_alive():
            raise BenchmarkError("the keypoint node exited")

    def publish(self, index: int) -> tuple[int, float] | None:
        """Publish frame `index` under a fresh, unique stamp; (stamp ns, publish time).

        None if publishing failed (DDS may refuse under load): counted, never fatal.
        """
        msg = self.frames[index % len(self.frames)]
        stamp = max(time.time_ns(), self._last_stamp + 1)
        self._last_stamp = stamp
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        sent_at = time.perf_counter()
        try:
            self.publisher.publish(msg)
        except Exception:
            self.publish_failures += 1
            return None
        return stamp, sent_at

    def _arrival(self, stamp: int, start: int = 0) -> float | None:
        return next((t for s, t in self.arrivals[start:] if s == stamp), None)

    def wait_ready(self) -> None:
        """Both directions matched: the node subscribes to us, we to its keypoints."""

        def ready() -> bool:
            self._check_node()
            return (
                self.publisher.get_subscription_count() > 0
                and self.keypoints.get_publisher_count() > 0
            )

        _wait(ready, STARTUP_TIMEOUT_S, "the node to subscribe to images and offer keypoints")

    def warm_up(self, frames: int) -> float:
        """Median round trip (s) of `frames` frames sent one at a time, after a first answer.

        The first frame is resent until answered: discovery is asymmetric, so a match seen
        here does not prove the node's reader matched us yet (and its first 640x480 frame is
        slow). Round trips estimate the processing rate, for ``auto``.
        """
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        answered = False
        while not answered:
            if time.monotonic() > deadline:
                raise BenchmarkError("the node never answered a frame")
            stamp = (self.publish(0) or (0, 0.0))[0]
            resend_at = time.monotonic() + WARMUP_RESEND_S
            while time.monotonic() < resend_at:
                self._check_node()
                if self._arrival(stamp) is not None:
                    answered = True
                    break
                time.sleep(POLL_S)
        trips = []
        for index in range(1, frames + 1):
            published = self.publish(index)
            if published is None:
                continue
            stamp, sent_at = published
            _wait(lambda s=stamp: self._arrival(s) is not None, 30.0, "a warm-up answer")
            arrived = self._arrival(stamp)
            assert arrived is not None
            trips.append(arrived - sent_at)
        if not trips:
            raise BenchmarkError("every warm-up frame failed to publish")
        return statistics.median(trips)

    def settle(self) -> int:
        """Wait until the node has nothing in flight; the index of the diagnostics that say so.

        Settled: two diagnostics in a row, both after this call, whose totals balance
        (received = processed + dropped + bad) and agree with each other.
        """
        start = len(self.diagnostics)

        def totals(values: dict[str, str]) -> tuple[int, ...]:
            keys = ("frames_received", "frames_processed", "frames_dropped", "frames_bad")
            return tuple(int(values[k]) for k in keys)

        def settled() -> bool:
            self._check_node()
            recent = self.diagnostics[start:]
            if len(recent) < 2:
                return False
            last, before = totals(recent[-1]), totals(recent[-2])
            return last == before and last[0] == sum(last[1:])

        _wait(settled, SETTLE_TIMEOUT_S, "the node to finish its frames (diagnostics)")
        return len(self.diagnostics) - 1

    def run_rate(self, rate_hz: float, seconds: float) -> PhaseResult:
        """Publish at `rate_hz` for `seconds`, settle, and gather this phase's figures."""
        base = self.settle()
        first_arrival = len(self.arrivals)
        count = max(1, round(rate_hz * seconds))
        sent: list[tuple[int, float]] = []
        start = time.perf_counter()
        for index in range(count):
            # Pacing the camera, not waiting for a condition: frames leave on a fixed schedule.
            delay = start + index / rate_hz - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            published = self.publish(index)
            if published is not None:
                sent.append(published)
        if not sent:
            raise BenchmarkError(f"no frame could be published at {rate_hz:g} Hz")
        # Achieved rate and duration: the publisher may fall behind the requested schedule.
        span = sent[-1][1] - sent[0][1]
        in_hz = (len(sent) - 1) / span if len(sent) > 1 and span > 0 else rate_hz
        duration = span + 1.0 / rate_hz
        end = self.settle()
        first, last = self.diagnostics[base], self.diagnostics[end]

        def delta(key: str) -> int:
            return int(last[key]) - int(first[key])

        processed = delta("frames_processed")
        stamps = {stamp for stamp, _ in sent}
        # Every processed frame's keypoints are published before it is counted: wait for them.
        try:
            _wait(
                lambda: sum(s in stamps for s, _ in self.arrivals[first_arrival:]) >= processed,
                10.0,
                "keypoints of every processed frame",
            )
        except BenchmarkError:
            pass  # reported as matched < processed
        arrived = dict(self.arrivals[first_arrival:])
        latencies = [(arrived[s] - t) * 1000.0 for s, t in sent if s in arrived]
        detector, overhead = self._node_times(base, end)
        return PhaseResult(
            rate_hz=rate_hz,
            in_hz=in_hz,
            sent=len(sent),
            received=delta("frames_received"),
            processed=processed,
            dropped=delta("frames_dropped"),
            bad=delta("frames_bad"),
            matched=len(latencies),
            out_hz=processed / duration,
            latencies_ms=latencies,
            detector_ms=detector,
            overhead_ms=overhead,
        )

    def _node_times(self, base: int, end: int) -> tuple[float | None, float | None]:
        """Detector and overhead means over the phase: window means weighted by frame counts."""
        weight = detector = overhead = 0.0
        for before, values in zip(
            self.diagnostics[base:end], self.diagnostics[base + 1 : end + 1], strict=True
        ):
            frames = int(values["frames_processed"]) - int(before["frames_processed"])
            if frames <= 0 or values.get("detector_time_mean_ms", "n/a") == "n/a":
                continue
            weight += frames
            detector += frames * float(values["detector_time_mean_ms"])
            overhead += frames * float(values["overhead_time_mean_ms"])
        if weight == 0:
            return None, None
        return detector / weight, overhead / weight


# --------------------------------------------------------------------------- node process


def node_args(bundle: Path, device: str, params: Sequence[str]) -> list[str]:
    """The keypoint node's ROS parameters: the bundle, frequent diagnostics, user params."""
    args = [
        "-p",
        f"bundle:={bundle}",
        "-p",
        f"device:={device}",
        "-p",
        f"diagnostics_period:={DIAGNOSTICS_PERIOD_S}",
    ]
    for param in params:
        args += ["-p", param]
    return args


def node_env(domain_id: int) -> dict[str, str]:
    """Loopback-only environment in our domain, with this skp_ros importable by the child."""
    return child_env(local_ros_env(domain_id))


# --------------------------------------------------------------------------- report


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def backlog_verdict(latencies_ms: Sequence[float]) -> tuple[float, float, str]:
    """p50 latency of the first and last third of a phase, and "flat" / "GROWS" / "n/a".

    A backlog makes latency climb for as long as input outpaces processing, so the last third
    is then far slower than the first; jitter alone stays within the ratio plus the slack.
    """
    third = len(latencies_ms) // 3
    if third == 0:
        return float("nan"), float("nan"), "n/a"
    first = statistics.median(latencies_ms[:third])
    last = statistics.median(latencies_ms[-third:])
    grows = last > BACKLOG_RATIO * first + BACKLOG_SLACK_MS
    return first, last, "GROWS" if grows else "flat"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return " ".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True))


def format_phases(results: Sequence[PhaseResult]) -> str:
    """Two tables, one row per rate: frame counts, then latency and node times (ms)."""
    widths = [max(len(c), 7) for c in FRAME_COLUMNS]
    lines = ["frames per input rate", _row(FRAME_COLUMNS, widths)]
    for r in results:
        lost = r.sent - r.received
        cells = [
            _num(r.rate_hz),
            _num(r.in_hz),
            *(str(v) for v in (r.sent, r.received, r.processed, r.dropped, r.bad, lost)),
            str(r.matched),
            _num(r.out_hz),
        ]
        lines.append(_row(cells, widths))
    widths = [max(len(c), 7) for c in TIME_COLUMNS]
    lines += ["", "latency and node time per input rate (ms)", _row(TIME_COLUMNS, widths)]
    for r in results:
        lat = r.latencies_ms
        first, last, verdict = backlog_verdict(lat)
        p50 = _percentile(lat, 50)
        met = (
            "n/a"
            if r.overhead_ms is None
            else ("yes" if r.overhead_ms < OVERHEAD_TARGET_MS else "NO")
        )
        cells = [
            _num(r.rate_hz),
            _num(p50),
            _num(_percentile(lat, 90)),
            _num(_percentile(lat, 99)),
            _num(r.detector_ms, 2),
            _num(r.overhead_ms, 2),
            met,
            _num(None if r.detector_ms is None else p50 - r.detector_ms),
            _num(first),
            _num(last),
            verdict,
        ]
        lines.append(_row(cells, widths))
    lines += [
        "",
        "in_Hz: achieved publish rate; received/processed/dropped/bad: the node's counters "
        "(dropped: replaced in its one-slot mailbox while busy; bad: undecodable or failed); "
        "lost: sent but never received (transport); "
        "matched: keypoint messages matched to a sent image by header stamp.",
        "p50/p90/p99: publish -> keypoints received; detector/overhead: node's means from "
        "/diagnostics (overhead = conversion, smoothing, messages, publishing); p50-det: "
        "transport + conversion + queueing around the model; backlog: p50 of the last third "
        f"vs the first third (GROWS if > {BACKLOG_RATIO}x + {BACKLOG_SLACK_MS:.0f} ms).",
    ]
    return "\n".join(lines)


def format_micro(micro: dict[str, float]) -> str:
    width = max(len(label) for label in micro)
    lines = ["conversion cost in this process (µs per call, median of 5 runs)"]
    lines += [f"{label:<{width}} {us:>10.1f}" for label, us in micro.items()]
    return "\n".join(lines)


def format_summary(results: Sequence[PhaseResult]) -> str:
    """The two verdicts the issue asks for, over all rates."""
    overheads = [r.overhead_ms for r in results if r.overhead_ms is not None]
    worst = max(overheads) if overheads else None
    target = "n/a" if worst is None else ("met" if worst < OVERHEAD_TARGET_MS else "NOT met")
    growing = [r.rate_hz for r in results if backlog_verdict(r.latencies_ms)[2] == "GROWS"]
    saturated = [r.rate_hz for r in results if r.dropped > 0]
    lines = [
        f"overhead (node time - detector time): worst mean {_num(worst, 2)} ms per "
        f"{WIDTH}x{HEIGHT} frame; target < {OVERHEAD_TARGET_MS:.0f} ms: {target}",
        "backlog: "
        + (
            f"latency GROWS at {', '.join(f'{r:.1f} Hz' for r in growing)}"
            if growing
            else "none (latency flat at every rate)"
        )
        + (
            f"; rates above the processing rate (frames dropped): "
            f"{', '.join(f'{r:.1f} Hz' for r in saturated)}"
            if saturated
            else "; no rate exceeded the processing rate (add a higher one)"
        ),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_rates(text: str) -> list[float | str]:
    """Read `--rates`: "2,10,auto" gives [2.0, 10.0, "auto"]; every rate must be > 0 Hz."""
    rates: list[float | str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item == "auto":
            rates.append(item)
            continue
        try:
            rate = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a rate: {item!r}") from None
        if not np.isfinite(rate) or rate <= 0:
            raise argparse.ArgumentTypeError(f"rates must be > 0 Hz, got {item!r}")
        rates.append(rate)
    if not rates:
        raise argparse.ArgumentTypeError("give at least one rate")
    return rates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="skp-node-bench", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--bundle", type=Path, help="bundle dir (default: a tiny random one)")
    parser.add_argument(
        "--rates",
        type=parse_rates,
        default=parse_rates("2,10,30,auto"),
        help="input rates in Hz, comma-separated; 'auto' = 2x the measured processing rate",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="publishing time per rate")
    parser.add_argument("--device", default="cpu", help="the node's device parameter")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="extra node parameter (repeatable), e.g. num_views:=1",
    )
    parser.add_argument("--frames", type=int, default=30, help="distinct pre-generated frames")
    parser.add_argument("--warmup", type=int, default=5, help="frames timed one at a time")
    parser.add_argument("--photo", default="astronaut", help="photo the sweep moves over")
    parser.add_argument(
        "--micro-seconds", type=float, default=0.2, help="time per run of each conversion timing"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.frames < 1 or args.warmup < 1 or args.micro_seconds <= 0:
        parser.error("--seconds, --frames, --warmup and --micro-seconds must be positive")
    if any(":=" not in p for p in args.param):
        parser.error("--param takes NAME:=VALUE")
    return args


def run(args: argparse.Namespace, workdir: Path) -> int:
    """Start the node, run every rate, stop the node, time conversions, print everything."""
    from std_msgs.msg import Header

    from skp_ros.camera_sweep import sample_photo, sweep_frame
    from skp_ros.image_conversion import rgb_to_image_msg

    bundle = args.bundle
    if bundle is None:
        bundle = make_tiny_bundle(workdir / "tiny_bundle")
    photo = sample_photo(args.photo)
    rgb_frames = [sweep_frame(photo, i, WIDTH, HEIGHT) for i in range(args.frames)]
    messages = [rgb_to_image_msg(f, Header(frame_id="bench_camera")) for f in rgb_frames]

    apply_local_ros_env()  # before rclpy.init: discovery stays on loopback
    domain = int(os.environ["ROS_DOMAIN_ID"])
    log_path = workdir / "node.log"
    print(
        f"skp-node-bench: bundle={bundle} device={args.device} params={args.param or '-'} "
        f"frames={WIDTH}x{HEIGHT} rgb8 seconds/rate={args.seconds:g} domain={domain} "
        f"discovery={os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']} cpus={os.cpu_count()}",
        flush=True,
    )
    results: list[PhaseResult] = []
    failures = 0
    proc = start_child(
        node_command(IMAGE_TOPIC, node_args(bundle, args.device, args.param)),
        log_path,
        env=node_env(domain),
    )
    client: BenchClient | None = None
    try:
        client = BenchClient(messages, lambda: proc.poll() is None)
        client.wait_ready()
        trip = client.warm_up(args.warmup)
        auto = min(2.0 / trip, AUTO_RATE_MAX_HZ)
        print(
            f"warm-up: {args.warmup} frames one at a time, round trip median "
            f"{trip * 1000:.1f} ms -> about {1.0 / trip:.1f} Hz; auto rate {auto:.1f} Hz",
            flush=True,
        )
        for rate in args.rates:
            hz = auto if rate == "auto" else float(rate)
            results.append(client.run_rate(hz, args.seconds))
    except BenchmarkError as exc:
        tail = log_tail(log_path) or "(no node output)"
        print(f"skp-node-bench: {exc}; node output:\n{tail}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            failures = client.publish_failures
            client.close()
        stop_child(proc)
    print()
    print(format_phases(results))
    print()
    print(format_micro(measure_conversions(rgb_frames[0], args.micro_seconds)))
    print()
    print(format_summary(results))
    if failures:
        print(f"camera side: {failures} frame(s) failed to publish (not counted as sent)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="skp_node_bench_") as tmp:
            return run(args, Path(tmp))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
