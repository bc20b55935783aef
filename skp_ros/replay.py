"""skp-replay: make image bags, replay them through the keypoint node, measure what comes back.

A robot team judges a perception node on recorded data: the same bag, replayed at the recorded
timing, must give the same keypoints, and the report says how many frames were lost, how late
results arrived and how steady the keypoints were. ``ros2 bag`` and ``rosbag2_py`` are not
installable everywhere, so this tool plays and records bags itself (through
:mod:`skp_ros.bag_io`) with plain rclpy.

Subcommands (``skp-replay SUBCOMMAND --help`` for all options):

* ``make-bag OUT_BAG``: write a bag of images from a folder, or of a deterministic camera sweep
  over a shipped photo, with header stamps at a fixed rate from a fixed epoch (so the same
  arguments always give the same bag).
* ``run BAG --out DIR``: publish the bag's images (original headers kept) at the recorded
  timing (scaled) or as fast as possible, optionally starting the node as a child process,
  record the node's outputs into a new bag, and write ``report.json``, an overlay strip and
  optionally a video.
* ``echo-node``: a tiny real node answering every image with fixed keypoints carrying the
  image's header; a smoke-test target for the player (and for a robot's plumbing).
* ``info BAG``: list a bag's topics.

This module is only the command line. From Python, :func:`skp_ros.replay_run.replay_bag` runs
``run`` and returns the report as a dict, and :func:`skp_ros.replay_make_bag.make_bag` writes
a bag; :mod:`skp_ros.replay_player`, :mod:`skp_ros.replay_analysis`,
:mod:`skp_ros.replay_render` and :mod:`skp_ros.echo_node` hold the rest.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from skp_ros.bag_io import STORAGE_FORMATS, BagError, bag_storage, bag_topics
from skp_ros.camera_sweep import SAMPLE_PHOTOS
from skp_ros.echo_node import run_echo_node
from skp_ros.replay_errors import ReplayError
from skp_ros.replay_make_bag import DEFAULT_TOPIC, make_bag
from skp_ros.replay_player import MATCH_SETTLE_S
from skp_ros.replay_run import DEFAULT_KEYPOINTS_TOPIC, replay_bag

__all__ = ["build_parser", "main"]


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The skp-replay parser: make-bag, run, echo-node and info."""
    parser = argparse.ArgumentParser(
        prog="skp-replay",
        description="Make image bags, replay them through the keypoint node, report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    make = sub.add_parser("make-bag", help="write an image bag from a folder or a camera sweep")
    make.add_argument("out_bag", type=Path, help="bag directory to create (must not exist)")
    source = make.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, help="folder of images (sorted by name)")
    source.add_argument(
        "--sweep",
        default="astronaut",
        choices=SAMPLE_PHOTOS,
        help="camera sweep over this shipped photo (default: astronaut)",
    )
    make.add_argument("--frames", type=_positive_int, help="frames (sweep default: 90)")
    make.add_argument("--rate", type=_positive_float, default=10.0, help="Hz (default: 10)")
    make.add_argument("--width", type=_positive_int, help="width (sweep default: 640)")
    make.add_argument("--height", type=_positive_int, help="height (sweep default: 480)")
    make.add_argument("--topic", default=DEFAULT_TOPIC, help=f"default: {DEFAULT_TOPIC}")
    make.add_argument(
        "--compressed", action="store_true", help="JPEG CompressedImage on TOPIC/compressed"
    )
    make.add_argument("--jpeg-quality", type=int, default=90, help="default: 90")
    make.add_argument("--storage", choices=STORAGE_FORMATS, default="sqlite3")
    make.add_argument("--frame-id", default="camera", help="header frame_id (default: camera)")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")

    run = sub.add_parser("run", help="replay a bag through the node and write a report")
    run.add_argument("bag", type=Path)
    run.add_argument("--out", type=Path, required=True, help="output directory")
    run.add_argument("--topic", help="image topic in the bag (default: its only image topic)")
    run.add_argument("--publish-topic", help="publish on this topic (default: the bag's topic)")
    pace = run.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate-scale",
        type=_positive_float,
        default=1.0,
        help="2.0: twice the recorded speed (default: 1.0)",
    )
    pace.add_argument("--fast", action="store_true", help="publish as fast as possible")
    pace.add_argument(
        "--lockstep",
        action="store_true",
        help="publish each frame once the node answered the last (or --timeout passed): "
        "results that do not depend on the machine's speed, for regression tests",
    )
    run.add_argument(
        "--node-cmd",
        help="start this node command as a child (e.g. 'python -m skp_ros.replay echo-node'); "
        "'--ros-args -r image:=TOPIC ...' is appended",
    )
    run.add_argument("--bundle", help="start the keypoint node with this bundle")
    run.add_argument("--model", help="keypoint node 'model' parameter")
    run.add_argument("--device", help="keypoint node 'device' parameter (e.g. cpu)")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="extra node parameter (repeatable)",
    )
    run.add_argument(
        "--keypoints-topic",
        default=DEFAULT_KEYPOINTS_TOPIC,
        help=f"default: {DEFAULT_KEYPOINTS_TOPIC}",
    )
    run.add_argument(
        "--record-topics", nargs="*", default=[], help="more topics to record (types from graph)"
    )
    run.add_argument(
        "--reliable", action="store_true", help="publish images reliable (default: best effort)"
    )
    run.add_argument(
        "--depth", type=_positive_int, default=10, help="image publisher depth (default: 10)"
    )
    run.add_argument(
        "--record-storage", choices=STORAGE_FORMATS, help="default: the input bag's storage"
    )
    run.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="seconds to wait for the last outputs, and with --lockstep for each frame's "
        "(default: 10)",
    )
    run.add_argument(
        "--startup-timeout",
        type=_positive_float,
        default=120.0,
        help="seconds to wait for the node to answer (default: 120)",
    )
    run.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the warm-up handshake (the first frames may then be lost to discovery)",
    )
    run.add_argument(
        "--match-settle",
        type=float,
        default=MATCH_SETTLE_S,
        help=f"with --no-warmup: seconds between discovery and the first frame "
        f"(default: {MATCH_SETTLE_S})",
    )
    run.add_argument(
        "--strip-frames", type=int, default=6, help="frames in the overlay strip (default: 6)"
    )
    run.add_argument("--video", action="store_true", help="also write overlays.mp4")
    run.add_argument("--local", action="store_true", help="keep ROS 2 traffic on loopback")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    echo = sub.add_parser(
        "echo-node",
        help="smoke-test node: fixed keypoints for every image (ROS args after --ros-args)",
    )
    echo.add_argument("--local", action="store_true", help="keep ROS 2 traffic on loopback")

    info = sub.add_parser("info", help="list a bag's topics")
    info.add_argument("bag", type=Path)
    return parser


def _run_from_args(args: argparse.Namespace) -> int:
    """The run subcommand: node parameters from the flags, then replay_bag; 0 if frames matched."""
    node_args: list[str] | None = None
    if args.bundle or args.model or args.device or args.param or args.node_cmd:
        node_args = []
        for name in ("bundle", "model", "device"):
            if getattr(args, name):
                node_args += ["-p", f"{name}:={getattr(args, name)}"]
        for item in args.param:
            if ":=" not in item:
                raise ReplayError(f"--param expects NAME:=VALUE, got {item!r}")
            node_args += ["-p", item]
    report = replay_bag(
        args.bag,
        args.out,
        topic=args.topic,
        publish_topic=args.publish_topic,
        fast=args.fast,
        rate_scale=args.rate_scale,
        lockstep=args.lockstep,
        node_args=node_args,
        node_cmd=args.node_cmd,
        keypoints_topic=args.keypoints_topic,
        record_topics=args.record_topics,
        reliable=args.reliable,
        depth=args.depth,
        record_storage=args.record_storage,
        timeout=args.timeout,
        startup_timeout=args.startup_timeout,
        warmup=not args.no_warmup,
        match_settle=args.match_settle,
        strip_frames=args.strip_frames,
        video=args.video,
        local=args.local,
        progress=not args.no_progress,
    )
    return 0 if report["matched"] > 0 and not report["stopped_early"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run skp-replay on `argv` (default: sys.argv[1:]) and return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Everything from --ros-args on belongs to rclpy (only echo-node takes it).
    split = arguments.index("--ros-args") if "--ros-args" in arguments else len(arguments)
    args = build_parser().parse_args(arguments[:split])
    ros_args = arguments[split:]
    if ros_args and args.command != "echo-node":
        print("skp-replay: error: only echo-node takes --ros-args", file=sys.stderr)
        return 2
    try:
        if args.command == "make-bag":
            summary = make_bag(
                args.out_bag,
                images_dir=args.images,
                sweep=args.sweep,
                frames=args.frames,
                rate=args.rate,
                width=args.width,
                height=args.height,
                topic=args.topic,
                compressed=args.compressed,
                storage=args.storage,
                frame_id=args.frame_id,
                jpeg_quality=args.jpeg_quality,
                progress=not args.no_progress,
            )
            sizes = ", ".join(f"{w}x{h}" for w, h in summary["sizes"])
            print(
                f"wrote {summary['frames']} frames ({sizes}) from {summary['source']} to "
                f"{summary['bag']} ({summary['storage']}), {summary['topic']} "
                f"[{summary['msgtype']}] at {summary['rate_hz']} Hz"
            )
            return 0
        if args.command == "run":
            return _run_from_args(args)
        if args.command == "echo-node":
            return run_echo_node(ros_args, args.local)
        if args.command == "info":
            print(f"{args.bag} ({bag_storage(args.bag)})")
            for name, (msgtype, count) in sorted(bag_topics(args.bag).items()):
                print(f"  {name}  {msgtype}  {count} messages")
            return 0
    except (ReplayError, BagError) as exc:
        print(f"skp-replay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
