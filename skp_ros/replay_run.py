"""skp-replay run: replay a bag through the keypoint node, record what comes back, report.

Why one function owns the run: it is a sequence whose resources (the node child process, the
ROS participant, the recorded bag) must be released whatever fails. The ROS side lives in
:mod:`skp_ros.replay_player`, the figures in :mod:`skp_ros.replay_analysis` and
:mod:`skp_ros.replay_render`; this module starts the node, drives the replay and records.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skp_core.progress import progress as progress_bar
from skp_ros.bag_io import (
    COMPRESSED_IMAGE_TYPE,
    POINTCLOUD2_TYPE,
    STORAGE_FORMATS,
    BagError,
    BagWriter,
    bag_storage,
    bag_topics,
    find_image_topic,
    read_messages,
)
from skp_ros.camera_geometry import side_topics
from skp_ros.camera_motion import CameraMotionError, read_camera_motion, tracking_error
from skp_ros.process import node_command, start_child, stop_child, wait_for
from skp_ros.replay_analysis import Received, analyse, event_rate, format_summary
from skp_ros.replay_errors import ReplayError
from skp_ros.replay_geometry import depth_figures, sweep_distances
from skp_ros.replay_make_bag import compressed_topic
from skp_ros.replay_player import (
    MATCH_SETTLE_S,
    Player,
    PlayerState,
    side_messages_by_stamp,
    startup_problem,
    wait_for_answer,
    wait_for_outputs,
    warm_up,
)
from skp_ros.replay_render import render_outputs

__all__ = ["DEFAULT_KEYPOINTS_TOPIC", "replay_bag"]

DEFAULT_KEYPOINTS_TOPIC = "/skp_keypoints/keypoints"


def _prepare_recorded_dir(path: Path) -> None:
    """Replace a previous run's recorded bag; refuse to delete anything that is not a bag."""
    if path.exists():
        if not (path / "metadata.yaml").is_file():
            raise ReplayError(f"{path} exists and is not a bag; move it away")
        shutil.rmtree(path)


def _side_topics(bag: Path, image_topic: str, out_topic: str) -> dict[str, tuple[str, str]]:
    """The bag's camera_info / depth topics: recorded name -> (publish topic, msgtype).

    camera_info and depth recorded beside the images go out beside the published images.
    """
    in_topics = bag_topics(bag)
    return {
        recorded: (published_as, in_topics[recorded][0])
        for recorded, published_as in zip(
            side_topics(image_topic), side_topics(out_topic), strict=True
        )
        if recorded in in_topics
    }


def _record(
    path: Path, storage: str, record_types: dict[str, str], received: Sequence[Received]
) -> dict[str, int]:
    """Write the outputs as received into the bag at `path`; messages per topic.

    Every recorded topic is declared, so a topic that got no message still shows (with 0).
    """
    with BagWriter(path, storage) as writer:
        for topic_name, msgtype in record_types.items():
            writer.add_topic(topic_name, msgtype)
        for item in received:
            writer.write_raw(item.topic, record_types[item.topic], item.data, item.wall_ns)
        return dict(writer.counts)


def replay_bag(
    bag_path: str | Path,
    out_dir: str | Path,
    *,
    topic: str | None = None,
    publish_topic: str | None = None,
    fast: bool = False,
    rate_scale: float = 1.0,
    lockstep: bool = False,
    node_args: list[str] | None = None,
    node_cmd: str | Sequence[str] | None = None,
    keypoints_topic: str = DEFAULT_KEYPOINTS_TOPIC,
    record_topics: Sequence[str] = (),
    reliable: bool = False,
    depth: int = 10,
    record_storage: str | None = None,
    timeout: float = 10.0,
    startup_timeout: float = 120.0,
    warmup: bool = True,
    match_settle: float = MATCH_SETTLE_S,
    strip_frames: int = 6,
    video: bool = False,
    video_frames: int = 300,
    local: bool = False,
    progress: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Replay a bag's image topic to the keypoint node and report on what came back.

    The images are published with their original headers on `publish_topic` (default: the
    bag's topic) at the recorded timing divided by `rate_scale`, back to back with `fast`, or
    in `lockstep`: each frame once the node has answered the previous one (or `timeout`
    seconds passed, which is noted and counted), so that what comes back does not depend on
    the machine's speed or load -- for regression tests; real-time behaviour is what
    skp-node-bench measures.
    If `node_args` or `node_cmd` is given, the node is started as a child process (default
    command: the keypoint node; `node_args` are ROS arguments such as ``["-p", "bundle:=DIR"]``)
    with its ``image`` input remapped to the published topic; otherwise an already-running
    node must be listening. Every message on `keypoints_topic` (and `record_topics`) is
    recorded, with its receive time, into ``out_dir/recorded``. Results are matched to inputs
    by header stamp. Unless `warmup` is off, the first frame is first sent under earlier stamps
    until the node answers, so discovery races cost no replayed frame (see skp_ros.replay_player);
    `startup_timeout` bounds discovery plus that handshake. Writes ``out_dir/report.json``
    and ``out_dir/overlay_strip.png`` (and ``overlays.mp4`` if `video`); returns the report.
    `local` confines ROS 2 to loopback (set before rclpy is initialised in this process).
    """
    started = time.monotonic()
    bag = Path(bag_path)
    out = Path(out_dir)
    if fast and lockstep:
        raise ReplayError("choose one pace: fast or lockstep")
    if not fast and (not math.isfinite(rate_scale) or rate_scale <= 0):
        raise ReplayError(f"rate_scale must be > 0, got {rate_scale}")
    if timeout <= 0 or startup_timeout <= 0:
        raise ReplayError(
            f"timeouts must be > 0, got timeout {timeout} and startup_timeout {startup_timeout}"
        )
    try:
        image_topic, image_msgtype = find_image_topic(bag, topic)
        storage = bag_storage(bag)
        frames_in_bag = bag_topics(bag)[image_topic][1]
    except BagError as exc:
        raise ReplayError(str(exc)) from None
    record_storage = record_storage or storage
    if record_storage not in STORAGE_FORMATS:
        raise ReplayError(f"unknown storage {record_storage!r}; choose one of {STORAGE_FORMATS}")
    compressed = image_msgtype == COMPRESSED_IMAGE_TYPE
    out_topic = publish_topic or image_topic
    if compressed and not out_topic.endswith("/compressed"):
        out_topic = compressed_topic(out_topic)  # the node subscribes to <image>/compressed
    side = _side_topics(bag, image_topic, out_topic)
    depth_side = side.get(side_topics(image_topic)[1])
    out.mkdir(parents=True, exist_ok=True)
    recorded_path = out / "recorded"
    _prepare_recorded_dir(recorded_path)
    notes: list[str] = []

    if local:
        from skp_ros.ros_env import apply_local_ros_env

        domain = os.environ.get("ROS_DOMAIN_ID")
        apply_local_ros_env(int(domain) if domain and domain.isdigit() else None)

    child: subprocess.Popen[bytes] | None = None
    command: list[str] | None = None
    log_path: Path | None = None
    if node_args is not None or node_cmd is not None:
        extra = (
            [] if depth_side is None else ["-p", "use_depth:=true", "-r", f"depth:={depth_side[0]}"]
        )
        try:
            command = node_command(
                out_topic, [*extra, *(node_args or [])], command=node_cmd, compressed=compressed
            )
        except ValueError as exc:  # an empty --node-cmd
            raise ReplayError(str(exc)) from None
        log_path = out / "node.log"
        child = start_child(command, log_path)

    state = PlayerState()
    player: Player | None = None
    exit_code: int | None = None
    stopped_early: str | None = None
    publish_failures = 0
    lockstep_timeouts = 0
    duplicate_stamps = 0
    publish_times: list[int] = []
    bag_times: list[int] = []
    warmup_info: dict[str, Any] = {"frames": 0, "answers": 0, "latency_ms": None}
    record_types = {keypoints_topic: POINTCLOUD2_TYPE}
    try:
        player = Player(state, out_topic, image_msgtype, keypoints_topic, reliable, depth)
        for published_as, msgtype in side.values():
            player.add_side_topic(published_as, msgtype)
        side_messages = side_messages_by_stamp(bag, side)
        if not wait_for(player.matched, startup_timeout, child):
            raise ReplayError(startup_problem(player, out_topic, keypoints_topic, child, log_path))
        if warmup:
            warmup_info = warm_up(player, bag, image_topic, startup_timeout, child, log_path)
        else:
            time.sleep(match_settle)  # let the node's side of discovery catch up
        for extra in record_topics:
            if extra in record_types:
                continue
            if wait_for(lambda t=extra: t in player.topic_types(), startup_timeout / 4, child):
                record_types[extra] = player.topic_types()[extra]
                player.subscribe(extra, record_types[extra])
            else:
                notes.append(f"record topic {extra} never appeared in the ROS graph; not recorded")

        bar = progress_bar(total=frames_in_bag, desc="replay", unit="frame", disable=not progress)
        first_bag_ns: int | None = None
        start_mono = time.monotonic()
        for index, message in enumerate(read_messages(bag, [image_topic])):
            if child is not None and child.poll() is not None:
                stopped_early = f"node exited with code {child.returncode} during the replay"
                break
            if not fast and not lockstep:
                first_bag_ns = message.timestamp_ns if first_bag_ns is None else first_bag_ns
                offset_s = (message.timestamp_ns - first_bag_ns) / 1e9 / rate_scale
                delay = start_mono + offset_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing to the recorded timing, not waiting on a result
            stamp = message.stamp_ns
            with state.lock:
                state.recording = True
                duplicate = stamp in state.published
                if not duplicate:
                    state.published[stamp] = (index, time.monotonic_ns())
            duplicate_stamps += duplicate
            bag_times.append(message.timestamp_ns)
            try:
                for published_as, data in side_messages.get(stamp, ()):
                    player.side_publishers[published_as].publish(data)
                player.publisher.publish(message.data)
                publish_times.append(time.monotonic_ns())
            except Exception as exc:  # RELIABLE at full speed may fail transiently
                publish_failures += 1
                if not duplicate:
                    with state.lock:
                        state.published.pop(stamp, None)
                if publish_failures <= 3:
                    player.node.get_logger().warning(f"publish failed: {exc}")
            else:
                answered = not lockstep or duplicate or wait_for_answer(state, stamp, timeout)
                if not answered:
                    lockstep_timeouts += 1
                    notes.append(
                        f"lockstep: frame {index} (stamp {stamp}) got no answer within "
                        f"{timeout:g} s; went on with the next frame"
                    )
            bar.update(1)
        bar.close()
        wait_for_outputs(state, timeout, child)
    finally:
        if player is not None:
            player.close()
        if child is not None:
            exit_code = stop_child(child)

    with state.lock:
        received = sorted(state.received, key=lambda r: r.mono_ns)
        published = dict(state.published)
        qos_problems = list(state.qos_problems)
    notes.extend(dict.fromkeys(qos_problems))
    if duplicate_stamps:
        notes.append(
            f"{duplicate_stamps} frames repeat an earlier header stamp; only the first "
            "of each is matched"
        )
    recorded_counts = _record(recorded_path, record_storage, record_types, received)

    report = analyse(received, published, keypoints_topic, publish_times, notes)
    latencies = report.pop("_latencies")
    keypoints = report.pop("_keypoints")
    points = report.pop("_points")
    bag_index = {stamp: published[stamp][0] for stamp in keypoints}
    try:
        motion = read_camera_motion(bag)
    except CameraMotionError as exc:
        motion = None
        notes.append(f"no tracking error: {exc}")
    answered = [(bag_index[s], s, ids, uv) for s, (ids, uv) in keypoints.items()]
    tracking = None if motion is None else tracking_error(answered, motion)
    # A sweep's poster is at a known distance: the node's metric keypoints must lie on it.
    distances = (
        {}
        if motion is None or depth_side is None
        else sweep_distances({s: i for s, (i, _) in published.items()})
    )
    points_3d = depth_figures(points, distances)
    video_fps = event_rate(bag_times) or 10.0
    strip_path, video_path, strip_indices = render_outputs(
        bag,
        image_topic,
        keypoints,
        bag_index,
        latencies,
        out,
        strip_frames,
        video,
        video_frames,
        video_fps,
        notes,
    )
    report = {
        "bag": str(bag),
        "storage": storage,
        "topic": image_topic,
        "msgtype": image_msgtype,
        "publish_topic": out_topic,
        "keypoints_topic": keypoints_topic,
        "mode": {
            "fast": fast,
            "lockstep": lockstep,
            "rate_scale": None if fast or lockstep else rate_scale,
            "reliable": reliable,
            "depth": depth,
        },
        "node_command": command,
        "node_exit_code": exit_code,
        "node_log": str(log_path) if log_path else None,
        "frames_in_bag": frames_in_bag,
        "warmup": warmup_info,
        "publish_failures": publish_failures,
        "lockstep_timeouts": lockstep_timeouts,
        "duplicate_input_stamps": duplicate_stamps,
        **report,
        "recorded_bag": str(recorded_path),
        "recorded_storage": record_storage,
        "recorded_counts": recorded_counts,
        "camera_motion_known": motion is not None,
        "tracking_error_px": tracking,
        "side_topics": {recorded: published_as for recorded, (published_as, _) in side.items()},
        "points_3d": points_3d,
        "overlay_strip": strip_path,
        "overlay_strip_frames": strip_indices,
        "overlay_video": video_path,
        "stopped_early": stopped_early,
        "wall_time_s": time.monotonic() - started,
        "notes": list(dict.fromkeys(notes)),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if not quiet:
        print(format_summary(report))
    return report
