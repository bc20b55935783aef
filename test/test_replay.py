"""skp-replay on real bags (sqlite3 and mcap) and real ROS 2 processes talking over DDS.

Bags are written by `make-bag` from the deterministic camera sweep or from real photos, read
back with rosbags (and cross-checked with rosbags' own CDR decoder), then replayed through a
real node process: the `echo-node` smoke-test target, an already-running echo node, and the
real keypoint node with a tiny bundle. Every wait is a condition with a timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import PointCloud2

from ros_support import REPO_ROOT, child_env, ros_process
from skp_ros.bag_io import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    POINTCLOUD2_TYPE,
    BagError,
    BagWriter,
    bag_storage,
    bag_topics,
    find_image_topic,
    header_stamp_ns,
    read_messages,
    replace_header_stamp,
)
from skp_ros.camera_motion import MOTION_FILE, read_camera_motion, tracking_error
from skp_ros.camera_sweep import sample_photo, sweep_frame, sweep_matrix
from skp_ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb
from skp_ros.keypoint_msgs import cloud_to_keypoints
from skp_ros.replay_errors import ReplayError
from skp_ros.replay_make_bag import BAG_EPOCH_NS, frame_stamp_ns, make_bag
from skp_ros.replay_render import render_outputs
from skp_ros.replay_run import DEFAULT_KEYPOINTS_TOPIC, replay_bag

STORAGES = ("sqlite3", "mcap")
STORAGE_SUFFIX = {"sqlite3": ".db3", "mcap": ".mcap"}
ECHO_CMD = [sys.executable, "-m", "skp_ros.replay", "echo-node"]
SIZE = (160, 120)  # small frames keep the DDS tests fast; content is still the real photo


def _run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m skp_ros.replay ARGS` in the test's private, loopback-only domain."""
    return subprocess.run(
        [sys.executable, "-m", "skp_ros.replay", *args],
        env=child_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- make-bag


@pytest.mark.parametrize("storage", STORAGES)
def test_make_bag_sweep_raw_gives_exact_frames_and_stamps(tmp_path: Path, storage: str) -> None:
    bag = tmp_path / "sweep"
    rate, frames = 15.0, 12
    summary = make_bag(
        bag,
        frames=frames,
        rate=rate,
        width=SIZE[0],
        height=SIZE[1],
        storage=storage,
        frame_id="cam_optical",
        progress=False,
    )
    assert summary["frames"] == frames
    assert bag_storage(bag) == storage
    assert [p.suffix for p in bag.iterdir() if p.name not in ("metadata.yaml", MOTION_FILE)] == [
        STORAGE_SUFFIX[storage]
    ]
    assert bag_topics(bag) == {
        "/camera/image_raw": (IMAGE_TYPE, frames),
        "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", frames),
        "/camera/depth/image_raw": (IMAGE_TYPE, frames),
    }
    # Each frame's camera_info and depth carry its header: the node matches them by stamp.
    sides = [m for m in read_messages(bag) if m.topic != "/camera/image_raw"]
    assert sorted(m.stamp_ns for m in sides) == sorted(
        [frame_stamp_ns(i, rate) for i in range(frames)] * 2
    )
    assert find_image_topic(bag) == ("/camera/image_raw", IMAGE_TYPE)

    photo = sample_photo("astronaut")
    messages = list(read_messages(bag, ["/camera/image_raw"]))
    assert len(messages) == frames
    stamps = []
    for index, message in enumerate(messages):
        msg = message.deserialize()
        assert (msg.width, msg.height, msg.encoding) == (*SIZE, "rgb8")
        assert msg.header.frame_id == "cam_optical"
        expected = sweep_frame(photo, index, *SIZE)
        np.testing.assert_array_equal(image_msg_to_rgb(msg), expected)
        stamps.append(message.stamp_ns)
        assert message.timestamp_ns == message.stamp_ns  # recorded when it was "taken"
    assert stamps[0] == BAG_EPOCH_NS
    np.testing.assert_allclose(np.diff(stamps), 1e9 / rate, atol=1)
    # Beside the frames, the camera's true motion of each one, by stamp.
    motion = read_camera_motion(bag)
    assert sorted(motion) == stamps
    for index, stamp in enumerate(stamps):
        np.testing.assert_array_equal(motion[stamp][:2], sweep_matrix(photo.shape, index, *SIZE))

    # Independent check: rosbags' own CDR decoder reads what rclpy serialised.
    typestore = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as reader:
        images = [c for c in reader.connections if c.topic == "/camera/image_raw"]
        connection, _, raw = next(reader.messages(connections=images))
        decoded = typestore.deserialize_cdr(raw, connection.msgtype)
    assert connection.msgtype == IMAGE_TYPE
    assert (decoded.header.stamp.sec, decoded.header.stamp.nanosec) == divmod(BAG_EPOCH_NS, 10**9)
    np.testing.assert_array_equal(
        np.asarray(decoded.data).reshape(SIZE[1], SIZE[0], 3), sweep_frame(photo, 0, *SIZE)
    )


@pytest.mark.parametrize("storage", STORAGES)
def test_make_bag_cli_compressed_sweep(tmp_path: Path, storage: str) -> None:
    bag = tmp_path / "jpeg"
    rate, frames = 30.0, 8
    result = _run_cli(
        "make-bag", str(bag), "--sweep", "chelsea", "--frames", str(frames), "--rate", str(rate),
        "--width", str(SIZE[0]), "--height", str(SIZE[1]), "--compressed",
        "--storage", storage, "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote 8 frames (160x120)" in result.stdout
    topic = "/camera/image_raw/compressed"
    assert bag_storage(bag) == storage
    assert bag_topics(bag) == {
        topic: (COMPRESSED_IMAGE_TYPE, frames),
        "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", frames),
        "/camera/depth/image_raw": (IMAGE_TYPE, frames),
    }
    # A base topic name finds its compressed stream, as image_transport names it.
    assert find_image_topic(bag, "/camera/image_raw") == (topic, COMPRESSED_IMAGE_TYPE)
    photo = sample_photo("chelsea")
    messages = list(read_messages(bag, [topic]))
    for index, message in enumerate(messages):
        msg = message.deserialize()
        assert "jpeg" in msg.format
        decoded = compressed_msg_to_rgb(msg).astype(np.float64)
        expected = sweep_frame(photo, index, *SIZE).astype(np.float64)
        assert decoded.shape == expected.shape
        assert np.abs(decoded - expected).mean() < 4.0  # JPEG quality 90
        assert message.stamp_ns == frame_stamp_ns(index, rate)
    assert np.all(np.diff([m.stamp_ns for m in messages]) > 0)
    info = _run_cli("info", str(bag))
    assert info.returncode == 0, info.stderr
    assert f"({storage})" in info.stdout
    assert f"{topic}  {COMPRESSED_IMAGE_TYPE}  {frames} messages" in info.stdout


def test_make_bag_from_folder_keeps_sizes_and_order(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    # Real photos of different sizes, written as lossless PNG (one also as JPEG).
    photos = {
        "a_coffee.png": sample_photo("coffee"),
        "b_chelsea.png": sample_photo("chelsea")[:200, :260],
        "c_rocket.png": cv2.resize(sample_photo("rocket"), (97, 131)),
    }
    for name, rgb in photos.items():
        cv2.imwrite(str(folder / name), np.ascontiguousarray(rgb[..., ::-1]))
    cv2.imwrite(str(folder / "d_astronaut.jpg"), sample_photo("astronaut")[..., ::-1])
    (folder / "notes.txt").write_text("not an image")

    bag = tmp_path / "folder_bag"
    summary = make_bag(bag, images_dir=folder, rate=5.0, storage="mcap", progress=False)
    assert summary["frames"] == 4
    messages = [m.deserialize() for m in read_messages(bag)]
    assert [(m.width, m.height) for m in messages] == [
        (600, 400),
        (260, 200),
        (97, 131),
        (512, 512),
    ]
    for msg, rgb in zip(messages, photos.values(), strict=False):
        np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    jpeg = image_msg_to_rgb(messages[3]).astype(np.float64)
    assert np.abs(jpeg - sample_photo("astronaut")).mean() < 4.0
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in messages]
    assert stamps == [frame_stamp_ns(i, 5.0) for i in range(4)]
    assert read_camera_motion(bag) is None  # unrelated photos: no camera motion to record

    resized = tmp_path / "resized_bag"
    make_bag(resized, images_dir=folder, frames=2, width=64, height=48, progress=False)
    assert [(m.deserialize().width, m.deserialize().height) for m in read_messages(resized)] == [
        (64, 48),
        (64, 48),
    ]


def test_bag_io_errors_are_clear(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    make_bag(bag, frames=2, width=32, height=24, progress=False)
    with pytest.raises(BagError, match="exists already"):
        BagWriter(bag)
    with pytest.raises(BagError, match="no topic /nope"):
        find_image_topic(bag, "/nope")
    with pytest.raises(BagError, match="not a rosbag2 directory"):
        bag_topics(tmp_path)
    with pytest.raises(ReplayError, match="holds no images"):
        make_bag(tmp_path / "x", images_dir=tmp_path / "bag", progress=False)


def test_header_stamp_is_read_from_cdr_in_both_byte_orders() -> None:
    little = (
        bytes([0, 1, 0, 0]) + (-5).to_bytes(4, "little", signed=True) + (7).to_bytes(4, "little")
    )
    big = bytes([0, 0, 0, 0]) + (-5).to_bytes(4, "big", signed=True) + (7).to_bytes(4, "big")
    assert header_stamp_ns(little) == header_stamp_ns(big) == -5 * 10**9 + 7
    with pytest.raises(BagError):
        header_stamp_ns(b"\x00\x01")
    for data in (little, big):
        moved = replace_header_stamp(data + b"rest", 12 * 10**9 + 34)
        assert header_stamp_ns(moved) == 12 * 10**9 + 34
        assert moved[:4] == data[:4] and moved.endswith(b"rest") and len(moved) == len(data) + 4


def test_sweep_matrix_is_the_true_motion_of_the_rendered_frames() -> None:
    """A bright dot painted on the photo appears in each frame where sweep_matrix puts it."""
    photo = sample_photo("astronaut").copy()
    x, y = 300, 200
    photo[y - 2 : y + 3, x - 2 : x + 3] = (0, 255, 0)
    photo[..., 1] = np.where(photo[..., 0] == 0, photo[..., 1], photo[..., 1] // 2)
    for index in (0, 7, 23, 51):
        frame = sweep_frame(photo, index, *SIZE)
        green = (frame[..., 1].astype(int) - frame[..., 0] - frame[..., 2]).clip(0)
        rows, cols = np.nonzero(green > 120)
        found = np.array([cols.mean(), rows.mean()])
        expected = sweep_matrix(photo.shape, index, *SIZE) @ np.array([x, y, 1.0])
        assert np.linalg.norm(found - expected) < 0.5, (index, found, expected)


def test_tracking_error_is_zero_for_keypoints_that_follow_the_camera() -> None:
    photo_shape = sample_photo("astronaut").shape
    stamps = [frame_stamp_ns(i, 10.0) for i in range(5)]
    motion = {
        stamp: np.vstack([sweep_matrix(photo_shape, i, *SIZE), [0, 0, 1]])
        for i, stamp in enumerate(stamps)
    }
    on_photo = np.array([[250.0, 180.0], [310.0, 260.0], [200.0, 300.0]])
    ids = np.array([0, 1, 2])

    def seen(i: int) -> np.ndarray:
        return on_photo @ motion[stamps[i]][:2, :2].T + motion[stamps[i]][:2, 2]

    following = [(i, stamps[i], ids, seen(i)) for i in (0, 1, 2, 4)]  # frame 3 dropped
    result = tracking_error(following, motion)
    assert result["pairs"] == 2 and result["keypoints"] == 6  # 2 -> 4 is no pair
    assert result["p95"] < 1e-9 and result["camera_motion_p50"] > 0.5
    # Glued to the image instead (and listed in another id order): the error is the motion.
    glued = [(i, stamps[i], ids[::-1], seen(0)[::-1]) for i in range(5)]
    result = tracking_error(glued, motion)
    assert result["pairs"] == 4
    assert result["p50"] == pytest.approx(result["camera_motion_p50"])
    assert tracking_error(following[:1], motion) is None


def test_strip_captions_use_the_bag_index_when_a_frame_dropped(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    make_bag(bag, frames=5, rate=10.0, width=SIZE[0], height=SIZE[1], progress=False)
    stamps = [frame_stamp_ns(i, 10.0) for i in range(5)]
    answered = {stamps[i]: (np.array([0]), np.array([[40.0, 30.0]])) for i in (0, 2, 3)}
    bag_index = {stamp: i for i, stamp in enumerate(stamps) if stamp in answered}
    strip, video, indices = render_outputs(
        bag, "/camera/image_raw", answered, bag_index, {}, tmp_path, 6, False, 0, 10.0, []
    )
    assert indices == [0, 2, 3] and video is None
    assert cv2.imread(strip).shape[1] == 3 * round(240 * SIZE[0] / SIZE[1])


# --------------------------------------------------------------------------- run (DDS)


def _check_replay_report(
    report: dict, out: Path, frames: int, storage: str, lossless: bool = True
) -> None:
    """The report, the recorded bag and the overlay strip agree with the replay.

    ``lossless`` (lockstep, or reliable both ways): every frame is answered. Otherwise (paced,
    best effort) a loaded machine may lose frames, so only the bookkeeping is exact: whatever
    came back is matched, and the rest is counted as dropped.
    """
    assert report["frames_published"] == frames
    assert report["publish_failures"] == 0
    matched = report["matched"]
    if lossless:
        assert matched == frames
    assert 1 <= matched <= frames
    assert report["keypoint_messages_received"] == matched
    assert report["dropped"] == frames - matched
    assert report["unmatched_outputs"] == 0
    latency = report["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    tracking = report["tracking_error_px"]
    if not report["camera_motion_known"]:
        assert tracking is None  # unrelated photos: no motion figure at all
    elif lossless:
        # The echo node's keypoints stay put in the image: their error is the camera's motion.
        assert tracking["pairs"] == frames - 1
        assert tracking["p50"] == pytest.approx(tracking["camera_motion_p50"])
        assert tracking["camera_motion_p50"] > 0.1
    assert report["overlay_strip_frames"] == sorted(report["overlay_strip_frames"])
    assert report["keypoints_per_message"] == {"mean": 5.0, "min": 5, "max": 5}
    assert report["warmup"]["frames"] >= 1 and report["warmup"]["latency_ms"] > 0
    assert report["node_exit_code"] in (0, None)
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))

    recorded = out / "recorded"
    assert bag_storage(recorded) == storage
    assert bag_topics(recorded)[DEFAULT_KEYPOINTS_TOPIC] == (POINTCLOUD2_TYPE, matched)
    outputs = list(read_messages(recorded, [DEFAULT_KEYPOINTS_TOPIC]))
    published = [frame_stamp_ns(i, 30.0) for i in range(frames)]
    stamps = sorted(m.stamp_ns for m in outputs)
    assert stamps == published if lossless else set(stamps) <= set(published)
    for message in outputs:
        cloud = message.deserialize()
        assert isinstance(cloud, PointCloud2)
        assert cloud.header.frame_id == "camera"
        ids, uv, _ = cloud_to_keypoints(cloud)
        assert ids.tolist() == [0, 1, 2, 3, 4]
        assert np.all((uv > 0) & (uv < SIZE))
        # Bag timestamps are receive times: wall clock of this run, after the frame's epoch.
        assert abs(message.timestamp_ns - time.time_ns()) < 600 * 10**9

    strip = cv2.imread(report["overlay_strip"])
    assert strip is not None and strip.shape[0] == 240 and strip.shape[1] > 240


@pytest.mark.ros
def test_replay_raw_sqlite3_through_echo_node(tmp_path: Path) -> None:
    """Recorded timing, best-effort images, the echo node started by the replay itself."""
    bag = tmp_path / "bag"
    frames = 20
    make_bag(bag, frames=frames, rate=30.0, width=SIZE[0], height=SIZE[1], progress=False)
    out = tmp_path / "out"
    report = replay_bag(
        bag,
        out,
        node_cmd=ECHO_CMD,
        local=True,
        startup_timeout=30.0,
        video=True,
        progress=False,
        quiet=True,
    )
    _check_replay_report(report, out, frames, "sqlite3", lossless=False)
    assert report["msgtype"] == IMAGE_TYPE and report["mode"]["fast"] is False
    # Paced at the recorded 30 Hz: no frame goes out before its time, so the replay lasts at
    # least the recorded span (its measured rate depends on load: a late first frame raises it)
    assert report["publish_rate_hz"] > 0 and report["wall_time_s"] >= (frames - 1) / 30.0
    if report["overlay_video"] is not None:
        video = cv2.VideoCapture(report["overlay_video"])
        count = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
        assert video.isOpened() and count == report["matched"]
    else:
        assert any("video" in note for note in report["notes"])
    assert "echo:" in (out / "node.log").read_text()


@pytest.mark.ros
def test_replay_cli_compressed_mcap_lockstep_reliable(tmp_path: Path) -> None:
    """The CLI end to end: JPEG bag in mcap, --lockstep --reliable, node from --node-cmd.

    Lockstep: every frame is answered before the next is sent, so the counts are exact on
    any machine, however loaded.
    """
    bag = tmp_path / "bag"
    frames = 20
    make_bag(
        bag,
        frames=frames,
        rate=30.0,
        width=SIZE[0],
        height=SIZE[1],
        compressed=True,
        storage="mcap",
        progress=False,
    )
    out = tmp_path / "out"
    result = _run_cli(
        "run", str(bag), "--out", str(out), "--lockstep", "--reliable", "--depth", "100",
        "--node-cmd", "python -m skp_ros.replay echo-node",
        "--param", "input_qos_reliability:=reliable", "--param", "input_qos_depth:=100",
        "--startup-timeout", "30", "--local", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "keypoint messages  20 received, 20 matched, 0 dropped" in result.stdout
    assert "lockstep (0 unanswered)" in result.stdout
    report = json.loads((out / "report.json").read_text())
    _check_replay_report(report, out, frames, "mcap")
    assert report["msgtype"] == COMPRESSED_IMAGE_TYPE
    assert report["publish_topic"] == "/camera/image_raw/compressed"
    assert "input_transport:=compressed" in report["node_command"]
    assert report["mode"] == {
        "fast": False,
        "lockstep": True,
        "rate_scale": None,
        "reliable": True,
        "depth": 100,
    }
    assert report["lockstep_timeouts"] == 0


@pytest.mark.ros
def test_replay_to_already_running_node_with_other_record_storage(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    frames = 10
    make_bag(
        bag, frames=frames, rate=30.0, width=SIZE[0], height=SIZE[1], topic="/cam/img",
        progress=False,
    )  # fmt: skip
    out = tmp_path / "out"
    args = ["-m", "skp_ros.replay", "echo-node", "--ros-args", "-r", "image:=/cam/img"]
    with ros_process(args, child_env()) as proc:
        report = replay_bag(
            bag,
            out,
            rate_scale=2.0,
            record_storage="mcap",
            record_topics=["/rosout"],
            local=True,
            startup_timeout=30.0,
            progress=False,
            quiet=True,
        )
        assert proc.poll() is None  # the replay leaves a node it did not start running
    _check_replay_report(report, out, frames, "mcap", lossless=False)
    assert report["node_command"] is None and report["node_log"] is None
    assert bag_topics(out / "recorded")["/rosout"][0] == "rcl_interfaces/msg/Log"


@pytest.mark.ros
def test_replay_without_node_fails_clearly(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    make_bag(bag, frames=2, width=32, height=24, topic="/lonely", progress=False)
    with pytest.raises(ReplayError, match="nobody subscribes to /lonely"):
        replay_bag(
            bag,
            tmp_path / "out",
            local=True,
            startup_timeout=1.0,
            match_settle=0.0,
            progress=False,
            quiet=True,
        )
    crashed = tmp_path / "crash"
    with pytest.raises(ReplayError, match="exited with code"):
        replay_bag(
            bag,
            crashed,
            node_cmd=[sys.executable, "-c", "raise SystemExit(3)"],
            local=True,
            startup_timeout=30.0,
            progress=False,
            quiet=True,
        )


@pytest.mark.ros
@pytest.mark.slow
def test_replay_through_keypoint_node_with_tiny_bundle(tmp_path: Path) -> None:
    """The real node (tiny backbone on CPU): outputs carry published stamps, report is sane."""
    try:
        from skp_ros.tiny_bundle import make_tiny_bundle
    except ImportError as exc:
        pytest.skip(f"skp_ros.tiny_bundle (tiny bundles) is not usable: {exc}")
    bundle = make_tiny_bundle(
        tmp_path / "bundle", method_overrides={"num_views": 2, "image_size": 128}
    )
    bag = tmp_path / "bag"
    frames = 8
    make_bag(bag, frames=frames, rate=30.0, width=SIZE[0], height=SIZE[1], progress=False)
    out = tmp_path / "out"
    report = replay_bag(
        bag,
        out,
        lockstep=True,  # every frame answered, however loaded the machine
        reliable=True,
        node_args=[
            *("-p", f"bundle:={bundle}", "-p", "device:=cpu"),
            # rclpy's standard override: the node's image subscription matches our reliable one.
            *("-p", "qos_overrides./camera/image_raw.subscription.reliability:=reliable"),
        ],
        local=True,
        startup_timeout=90.0,
        timeout=30.0,
        progress=False,
        quiet=True,
    )
    log = (out / "node.log").read_text()
    assert report["node_exit_code"] == 0, log
    assert report["frames_published"] == frames
    assert report["matched"] == frames and report["lockstep_timeouts"] == 0, (report, log)
    assert report["unmatched_outputs"] == 0 and report["undecodable_outputs"] == 0
    assert report["latency_ms"]["min"] > 0
    assert 1 <= report["keypoints_per_message"]["max"] <= 16
    published = {frame_stamp_ns(i, 30.0) for i in range(frames)}
    recorded = list(read_messages(out / "recorded"))
    assert len(recorded) == report["keypoint_messages_received"]
    assert {m.stamp_ns for m in recorded} <= published
    assert cv2.imread(report["overlay_strip"]) is not None
    # The sweep bag carries camera_info and a registered depth image: the replay publishes them
    # beside the images, starts the node with use_depth, and every keypoint lies on the poster
    # at its known distance (depth stored in whole millimetres).
    assert report["side_topics"] == {
        "/camera/camera_info": "/camera/camera_info",
        "/camera/depth/image_raw": "/camera/depth/image_raw",
    }
    points = report["points_3d"]
    assert points["frames_with_3d"] == frames == points["frames"]
    assert points["keypoints_with_3d"] == points["keypoints"] > 0
    assert points["depth_error_mm_max"] <= 0.5 + 1e-3, points
