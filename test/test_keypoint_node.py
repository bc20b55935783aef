"""The keypoint node as a real process, driven over DDS (loopback only) from this test process.

Four node processes serve every check:

* a raw-image node with a landmark regressor: stamps/frame ids of real photos, in-image
  coordinates, ~/landmarks, latched ~/keypoint_info, /diagnostics, the debug image only while
  subscribed (and its heat map switched on at runtime), runtime parameter validation, and a
  corpus of malformed images that are skipped while the node keeps serving;
* a compressed-image node (lazy, RELIABLE input): a QoS mismatch warning, JPEG input, corrupt
  compressed data, lazy (un)subscription, and a clean SIGINT exit (code 0);
* a node started with autostart:=false, driven through lifecycle_msgs services: a missing
  bundle, a bundle/backbone mismatch, missing weights and an absent CUDA device each fail
  configure with a clear message; CPU fallback; activate, deactivate, cleanup;
* a node whose autostart fails, which must exit with code 1 and say why.

The tiny built-in backbone at 128 px with 2 views keeps every frame well under a second on CPU.
"""

from __future__ import annotations

import array
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from node_support import (
    STARTUP_TIMEOUT_S,
    NodeProcess,
    RosClient,
    diagnostic_values,
    header,
    in_image,
    keypoint_node_argv,
    node_process,
    param_args,
    stamp_ns,
)
from rclpy.context import Context
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from offline_tools.fixtures import decompression_bomb
from skp_core.bundle import default_colors
from skp_ros.camera_sweep import sample_photo
from skp_ros.image_conversion import image_msg_to_rgb, rgb_to_compressed_msg, rgb_to_image_msg
from skp_ros.keypoint_msgs import cloud_to_instances, cloud_to_keypoints
from skp_ros.tiny_bundle import make_tiny_bundle

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = "/skp_keypoints"
PHOTOS = ("astronaut", "chelsea", "coffee")
NUM_KEYPOINTS = 6  # the tiny config's top_k
NUM_LANDMARKS = 3
FAST = {"num_views": 2, "image_size": 128}
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


@pytest.fixture(scope="module")
def client(module_rclpy_context: Context) -> Iterator[RosClient]:
    ros = RosClient(module_rclpy_context)
    yield ros
    ros.close()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {
        "plain": make_tiny_bundle(root / "plain", method_overrides=FAST),
        "landmarks": make_tiny_bundle(
            root / "landmarks", num_landmarks=NUM_LANDMARKS, method_overrides=FAST
        ),
        "mismatch": make_tiny_bundle(root / "mismatch", context_dim=16, method_overrides=FAST),
        "too_many_views": _edited(
            make_tiny_bundle(root / "too_many_views", method_overrides=FAST), num_views=10**9
        ),
        "missing_layer": _edited(
            make_tiny_bundle(root / "missing_layer", method_overrides=FAST),
            layers=["up_blocks.9.attentions.0"],
        ),
    }


def _edited(bundle: Path, **method: object) -> Path:
    """The bundle with method settings changed in its JSON, as a hand edit would."""
    doc = json.loads((bundle / "bundle.json").read_text())
    doc["method"].update(method)
    (bundle / "bundle.json").write_text(json.dumps(doc))
    return bundle


def _photo_msg(name: str, stamp: int, frame_id: str) -> Image:
    return rgb_to_image_msg(sample_photo(name), header(stamp, frame_id))


def _cloud_with_stamp(clouds: list[PointCloud2], stamp: int) -> PointCloud2 | None:
    return next((c for c in clouds if stamp_ns(c.header) == stamp), None)


def test_parameter_table_is_consistent():
    from skp_ros.parameters import PARAMETERS, SPECS, NodeSettings, check_value

    assert len(SPECS) == len(PARAMETERS)
    assert all(spec.description.endswith(".") for spec in PARAMETERS)
    defaults = {spec.name: spec.default for spec in PARAMETERS}
    settings = NodeSettings.from_values(defaults)
    assert settings.device == "auto" and settings.cameras == () and settings.roi == (0, 0, 0, 0)
    assert check_value("device", "cuda:1") is None and check_value("device", "auto") is None
    assert check_value("cameras", ["front", "rear"]) is None
    assert "twice" in check_value("cameras", ["front", "front"])
    assert "[x, y, width, height]" in check_value("roi", [1, 2, 3])
    assert "odd" in check_value("depth_window", 4)
    assert (
        check_value("readout", "weighted_avg") is None and check_value("readout", "bundle") is None
    )
    assert "must be" in check_value("device", "gpu")
    assert "type int" in check_value("num_views", 2.0)
    assert "type bool" in check_value("lazy", 1)
    assert "must be" in check_value("image_topic", "bad topic")
    assert check_value("image_topic", "~/image") is None
    with pytest.raises(ValueError, match=r"score_threshold.*smoothing_beta"):
        NodeSettings.from_values({**defaults, "score_threshold": 2.0, "smoothing_beta": -1.0})


# --------------------------------------------------------------------------- raw-image node


@pytest.fixture(scope="module")
def raw_node(
    client: RosClient, bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    """Node A: raw images on /cam_a/image_raw (via the `image` remap), landmark bundle."""
    args = param_args(bundle=bundles["landmarks"], device="cpu", diagnostics_period=0.2)
    args += ["-r", "image:=/cam_a/image_raw"]
    log = tmp_path_factory.mktemp("raw_node") / "node.log"
    with node_process(keypoint_node_argv(args), log) as node:
        node.wait_for_output("activated", STARTUP_TIMEOUT_S)
        yield node
        assert node.alive, node.output()


@pytest.fixture(scope="module")
def raw_io(client: RosClient, raw_node: NodeProcess) -> dict[str, object]:
    """Test-side endpoints for node A (created once, shared by its tests)."""
    return {
        "image_pub": client.node.create_publisher(Image, "/cam_a/image_raw", RELIABLE),
        "keypoints": client.collect(PointCloud2, f"{NODE}/keypoints", RELIABLE),
        "landmarks": client.collect(PointCloud2, f"{NODE}/landmarks", RELIABLE),
    }


def test_keypoints_of_real_photos_keep_stamp_and_frame(client, raw_node, raw_io):
    pub, clouds, landmark_clouds = raw_io["image_pub"], raw_io["keypoints"], raw_io["landmarks"]
    for i, name in enumerate(PHOTOS):
        stamp, frame_id = 1_000_000_000 * (i + 1) + 123, f"camera_{name}"
        msg = _photo_msg(name, stamp, frame_id)
        client.publish_until(
            pub,
            msg,
            lambda s=stamp: (
                _cloud_with_stamp(clouds, s) is not None
                and _cloud_with_stamp(landmark_clouds, s) is not None
            ),
            what=f"keypoints and landmarks of {name}",
        )
        cloud = _cloud_with_stamp(clouds, stamp)
        assert cloud.header.frame_id == frame_id
        ids, uv, scores = cloud_to_keypoints(cloud)
        assert ids.tolist() == list(range(NUM_KEYPOINTS))
        assert in_image(uv, msg.width, msg.height), (name, uv)
        assert np.all((scores >= 0) & (scores <= 1))
        landmarks = _cloud_with_stamp(landmark_clouds, stamp)
        assert landmarks.header.frame_id == frame_id
        lm_ids, lm_uv, lm_scores = cloud_to_keypoints(landmarks)
        assert lm_ids.tolist() == list(range(NUM_LANDMARKS))
        assert np.all(np.isfinite(lm_uv))
        assert np.allclose(lm_scores, scores.mean(), atol=1e-6)
    # Different photos give different keypoints (the node is not replaying one result).
    first = cloud_to_keypoints(_cloud_with_stamp(clouds, 1_000_000_123))[1]
    second = cloud_to_keypoints(_cloud_with_stamp(clouds, 2_000_000_123))[1]
    assert not np.allclose(first, second)


def test_keypoint_info_is_latched_for_late_subscribers(client, raw_node, bundles):
    infos = client.collect(String, f"{NODE}/keypoint_info", LATCHED)
    client.spin_until(lambda: len(infos) > 0, what="latched ~/keypoint_info")
    info = json.loads(infos[0].data)
    assert info["format"] == "skp_keypoint_info"
    assert [k["id"] for k in info["keypoints"]] == list(range(NUM_KEYPOINTS))
    assert [k["name"] for k in info["keypoints"]] == [f"part_{i}" for i in range(NUM_KEYPOINTS)]
    assert all(len(k["color_rgb"]) == 3 for k in info["keypoints"])
    assert [m["name"] for m in info["landmarks"]] == [f"joint{j}" for j in range(NUM_LANDMARKS)]
    assert info["topics"]["keypoints"] == f"{NODE}/keypoints"
    assert info["model"] == "tiny" and info["device"] == "cpu"


def test_diagnostics_report_rates_times_and_counts(client, raw_node):
    values = client.wait_diagnostics(NODE, lambda v: v["state"] == "active")
    for key in (
        "processing_time_last_ms",
        "processing_time_mean_ms",
        "input_rate_hz",
        "output_rate_hz",
        "frames_received",
        "frames_processed",
        "frames_dropped",
        "frames_bad",
        "publish_failures",
        "device",
        "num_views",
        "model",
    ):
        assert key in values, key
    assert values["device"] == "cpu" and values["model"] == "tiny" and values["num_views"] == "2"
    assert values["input_topic"] == "/cam_a/image_raw"
    assert float(values["input_rate_hz"]) >= 0.0


def test_every_received_frame_is_processed_dropped_or_bad(client, raw_node, raw_io):
    # A burst faster than the model: only the latest frame is processed, the rest are
    # counted as dropped (in the node's one-slot mailbox) -- nothing queues up, nothing is lost.
    burst = [_photo_msg("coffee", 40_000_000_000 + i, "burst_cam") for i in range(8)]
    for msg in burst:
        raw_io["image_pub"].publish(msg)
    last = stamp_ns(burst[-1].header)
    client.publish_until(
        raw_io["image_pub"],
        burst[-1],
        lambda: _cloud_with_stamp(raw_io["keypoints"], last) is not None,
        what="keypoints of the last frame of the burst",
    )

    def balanced(v: dict[str, str]) -> bool:
        counts = [int(v[k]) for k in ("frames_processed", "frames_dropped", "frames_bad")]
        return int(v["frames_received"]) == sum(counts)

    values = client.wait_diagnostics(NODE, balanced)
    assert int(values["frames_received"]) > 0


def test_debug_image_only_while_subscribed(client, raw_node, raw_io):
    pub, clouds = raw_io["image_pub"], raw_io["keypoints"]

    def process_frame(stamp: int) -> None:
        client.publish_until(
            pub,
            _photo_msg("astronaut", stamp, "debug_cam"),
            lambda: _cloud_with_stamp(clouds, stamp) is not None,
            what=f"keypoints of frame {stamp}",
        )

    def debug_count_after(stamp_processed: int) -> int:
        processed_before = int(client.wait_diagnostics(NODE)["frames_processed"])
        process_frame(stamp_processed)
        values = client.wait_diagnostics(
            NODE, lambda v: int(v["frames_processed"]) > processed_before
        )
        return int(values["debug_images_published"])

    idle = client.wait_diagnostics(NODE, lambda v: v["debug_subscribers"] == "0")
    assert debug_count_after(50_000_000_001) == int(idle["debug_images_published"])

    debug_images: list[Image] = []
    subscription = client.node.create_subscription(
        Image, f"{NODE}/debug_image", debug_images.append, RELIABLE
    )
    client.wait_diagnostics(NODE, lambda v: v["debug_subscribers"] == "1")
    stamp = 50_000_000_002
    client.publish_until(
        pub,
        _photo_msg("astronaut", stamp, "debug_cam"),
        lambda: any(stamp_ns(m.header) == stamp for m in debug_images),
        what="a debug image",
    )
    debug = next(m for m in debug_images if stamp_ns(m.header) == stamp)
    assert (debug.encoding, debug.width, debug.height) == ("rgb8", 512, 512)
    assert debug.header.frame_id == "debug_cam"
    overlay = image_msg_to_rgb(debug)
    photo = sample_photo("astronaut")
    assert not np.array_equal(overlay, photo)
    _, uv, _ = cloud_to_keypoints(_cloud_with_stamp(clouds, stamp))
    colors = default_colors(NUM_KEYPOINTS)
    checked = 0
    for k, (u, v) in enumerate(uv):
        others = np.delete(uv, k, axis=0)
        if np.min(np.linalg.norm(others - uv[k], axis=1)) < 20:
            continue  # overlapping markers: the later one wins, nothing to check here
        assert tuple(overlay[round(v), round(u)]) == colors[k], (k, u, v)
        checked += 1
    assert checked > 0, f"all keypoints overlap: {uv}"

    # The heat map is a runtime switch: same frame, same keypoints, a different picture.
    result = client.set_parameters(NODE, debug_heatmap=True)
    assert result[0].successful, result[0].reason
    stamp_heat = 50_000_000_003
    client.publish_until(
        pub,
        _photo_msg("astronaut", stamp_heat, "debug_cam"),
        lambda: any(stamp_ns(m.header) == stamp_heat for m in debug_images),
        what="a debug image with heat map",
    )
    heat = image_msg_to_rgb(next(m for m in debug_images if stamp_ns(m.header) == stamp_heat))
    assert heat.shape == overlay.shape and not np.array_equal(heat, overlay)
    client.set_parameters(NODE, debug_heatmap=False)

    client.node.destroy_subscription(subscription)
    idle = client.wait_diagnostics(NODE, lambda v: v["debug_subscribers"] == "0")
    assert debug_count_after(50_000_000_004) == int(idle["debug_images_published"])


def test_runtime_parameters_are_validated(client, raw_node, raw_io):
    bad = client.set_parameters(NODE, score_threshold=-0.5)[0]
    assert not bad.successful and "score_threshold" in bad.reason
    bad = client.set_parameters(NODE, readout="median")[0]
    assert not bad.successful and "'readout' must be one of" in bad.reason
    locked = client.set_parameters(NODE, num_views=3)[0]
    assert not locked.successful and "read on configure" in locked.reason
    assert client.get_parameters(NODE, ["num_views"]) == {"num_views": 0}

    # score_threshold = 1: no attention peak reaches probability 1, so every keypoint is omitted.
    assert client.set_parameters(NODE, score_threshold=1.0)[0].successful
    stamp = 60_000_000_001
    client.publish_until(
        raw_io["image_pub"],
        _photo_msg("chelsea", stamp, "cam"),
        lambda: _cloud_with_stamp(raw_io["keypoints"], stamp) is not None,
        what="a thresholded cloud",
    )
    assert _cloud_with_stamp(raw_io["keypoints"], stamp).width == 0
    assert client.set_parameters(NODE, score_threshold=0.0)[0].successful

    # Smoothing switches on at runtime; its settings are checked like every other value.
    assert not client.set_parameters(NODE, smoothing="kalman")[0].successful
    assert not client.set_parameters(NODE, smoothing_min_cutoff=0.0)[0].successful
    result = client.set_parameters(NODE, smoothing="one_euro", smoothing_beta=0.5)
    assert all(r.successful for r in result), [r.reason for r in result]
    for stamp in (61_000_000_000, 61_100_000_000):
        client.publish_until(
            raw_io["image_pub"],
            _photo_msg("chelsea", stamp, "cam"),
            lambda s=stamp: _cloud_with_stamp(raw_io["keypoints"], s) is not None,
            what="a smoothed cloud",
        )
        assert _cloud_with_stamp(raw_io["keypoints"], stamp).width == NUM_KEYPOINTS
    assert client.set_parameters(NODE, smoothing="none")[0].successful


def _malformed_images() -> dict[str, Image]:
    good = rgb_to_image_msg(sample_photo("chelsea"))
    row = good.width * 3

    def variant(**fields) -> Image:
        msg = Image(height=good.height, width=good.width, encoding=good.encoding)
        msg.step, msg.data = good.step, good.data
        for key, value in fields.items():
            setattr(msg, key, value)
        return msg

    return {
        "wrong step": variant(step=row - 3),
        "unknown encoding": variant(encoding="fancy42"),
        "zero size": variant(width=0, height=0, step=0, data=array.array("B")),
        "huge declared size": variant(width=100_000, height=100_000, step=300_000),
        "truncated data": variant(data=good.data[: len(good.data) // 2]),
    }


def test_malformed_images_are_skipped_and_node_keeps_serving(client, raw_node, raw_io):
    pub = raw_io["image_pub"]
    for i, (what, msg) in enumerate(_malformed_images().items()):
        msg.header = header(70_000_000_000 + i, "bad_cam")
        before = int(client.wait_diagnostics(NODE)["frames_bad"])
        client.publish_until(
            pub,
            msg,
            lambda b=before: int(client.wait_diagnostics(NODE)["frames_bad"]) > b,
            what=f"the node to count the {what} frame as bad",
        )
        assert raw_node.alive, raw_node.output()
    stamp = 70_000_000_100
    client.publish_until(
        pub,
        _photo_msg("coffee", stamp, "good_cam"),
        lambda: _cloud_with_stamp(raw_io["keypoints"], stamp) is not None,
        what="keypoints of a good frame after the malformed ones",
    )
    assert "skipped a bad image" in raw_node.output()


# --------------------------------------------------------------------------- compressed node


def test_compressed_input_qos_warning_lazy_and_clean_exit(client, bundles, tmp_path):
    args = param_args(
        bundle=bundles["plain"],
        device="cpu",
        input_transport="compressed",
        lazy=True,
        diagnostics_period=0.2,
    )
    args += ["-r", "__node:=skp_compressed", "-r", "image:=/cam_b/image"]
    # The standard start-up override (rclpy's QoSOverridingOptions) makes the input RELIABLE.
    args += ["-p", "qos_overrides./cam_b/image/compressed.subscription.reliability:=reliable"]
    node_name, topic = "/skp_compressed", "/cam_b/image/compressed"
    node = NodeProcess(keypoint_node_argv(args), tmp_path / "node.log")
    try:
        node.wait_for_output("activated", STARTUP_TIMEOUT_S)
        reliable_pub = client.node.create_publisher(CompressedImage, topic, RELIABLE)
        # Lazy: nobody listens to the outputs, so the node does not subscribe to images.
        values = client.wait_diagnostics(node_name, lambda v: v["state"] == "active")
        assert values["subscribed"] == "false"
        clouds: list[PointCloud2] = []
        keypoint_sub = client.node.create_subscription(
            PointCloud2, f"{node_name}/keypoints", clouds.append, RELIABLE
        )
        client.spin_until(lambda: reliable_pub.get_subscription_count() > 0, what="lazy subscribe")

        # A best-effort camera cannot feed a RELIABLE subscription: the node says so clearly.
        best_effort_pub = client.node.create_publisher(
            CompressedImage, topic, qos_profile_sensor_data
        )
        client.spin_until(
            lambda: "QoS mismatch on input /cam_b/image/compressed" in node.output(),
            what="the QoS mismatch warning",
        )
        assert "qos_overrides./cam_b/image/compressed.subscription.reliability" in node.output()
        client.node.destroy_publisher(best_effort_pub)

        for i, name in enumerate(PHOTOS):
            stamp = 80_000_000_000 + i
            photo = sample_photo(name)
            msg = rgb_to_compressed_msg(photo, header(stamp, "jpeg_cam"))
            client.publish_until(
                reliable_pub,
                msg,
                lambda s=stamp: _cloud_with_stamp(clouds, s) is not None,
                what=f"keypoints of compressed {name}",
            )
            cloud = _cloud_with_stamp(clouds, stamp)
            assert cloud.header.frame_id == "jpeg_cam"
            ids, uv, _ = cloud_to_keypoints(cloud)
            assert ids.tolist() == list(range(NUM_KEYPOINTS))
            assert in_image(uv, photo.shape[1], photo.shape[0])

        jpeg = rgb_to_compressed_msg(sample_photo("coffee"))
        corrupt = {  # the first bad frame is logged (later ones may be throttled)
            "JPEG bomb": decompression_bomb("JPEG"),  # 1.3 KB claiming 16000 x 16000
            "PNG bomb": decompression_bomb("PNG"),
            "corrupt JPEG": bytes(jpeg.data[:200]) + b"\x00garbage" * 50,
            "truncated JPEG": bytes(jpeg.data[: len(jpeg.data) // 3]),
            "empty data": b"",
        }
        for i, (what, data) in enumerate(corrupt.items()):
            bad = CompressedImage(header=header(81_000_000_000 + i, "jpeg_cam"), format="jpeg")
            bad.data = array.array("B", data)
            before = int(client.wait_diagnostics(node_name)["frames_bad"])
            client.publish_until(
                reliable_pub,
                bad,
                lambda b=before: int(client.wait_diagnostics(node_name)["frames_bad"]) > b,
                what=f"the node to count the {what} as bad",
            )
        stamp = 82_000_000_000
        client.publish_until(
            reliable_pub,
            rgb_to_compressed_msg(sample_photo("astronaut"), header(stamp, "jpeg_cam")),
            lambda: _cloud_with_stamp(clouds, stamp) is not None,
            what="keypoints after the corrupt frames",
        )
        # The JPEG bomb was refused from its header, never decoded.
        assert "header says 16000x16000 (256000000 pixels)" in node.output()

        # Lazy again: the last output subscriber leaves, the node unsubscribes from images.
        client.node.destroy_subscription(keypoint_sub)
        client.spin_until(
            lambda: reliable_pub.get_subscription_count() == 0, what="lazy unsubscribe"
        )
        assert node.alive, node.output()
    finally:
        code = node.stop()
    assert code == 0, node.output()


# --------------------------------------------------------------------------- lifecycle node


def test_lifecycle_transitions_and_clear_configure_failures(client, bundles, tmp_path):
    name = "/skp_lifecycle"
    missing = tmp_path / "no_such_bundle"
    args = param_args(autostart=False, bundle=missing, device="cpu", diagnostics_period=0.2)
    args += ["-r", "__node:=skp_lifecycle", "-r", "image:=/cam_c/image"]
    node = NodeProcess(keypoint_node_argv(args), tmp_path / "node.log")
    try:
        assert client.get_state(name) == "unconfigured"

        # 1. Missing bundle.
        assert not client.change_state(name, "configure")
        node.wait_for_output("configure failed: cannot load the bundle")
        assert str(missing) in node.output() and "does not exist" in node.output()
        assert client.get_state(name) == "unconfigured"

        # 2. A bundle trained for another backbone.
        assert client.set_parameters(name, bundle=str(bundles["mismatch"]))[0].successful
        assert not client.change_state(name, "configure")
        node.wait_for_output("does not fit backbone 'tiny'")
        assert "cross-attention dim 16" in node.output()

        # 3. Missing weights.
        assert client.set_parameters(
            name, bundle=str(bundles["plain"]), model=str(tmp_path / "no_weights")
        )[0].successful
        assert not client.change_state(name, "configure")
        node.wait_for_output("cannot load the backbone")

        # 3b. A hub model missing from the cache: refused, never downloaded (robots run offline).
        assert client.set_parameters(name, model="nobody/no-such-model")[0].successful
        assert not client.change_state(name, "configure")
        node.wait_for_output("downloads are not allowed here")
        assert "allow_download:=true" in node.output()
        assert "downloading it failed" not in node.output()

        # 3c. Bundles whose method cannot run: refused at configure, in one line, before any
        # inference (a billion views once took a minute to fail on a 32 GB allocation).
        for bundle, message in (
            ("too_many_views", "method.num_views must be between 1 and 256, got 1000000000"),
            ("missing_layer", "method.layers: no attention layer 'up_blocks.9.attentions.0"),
        ):
            assert client.set_parameters(name, model="", bundle=str(bundles[bundle]))[0].successful
            assert not client.change_state(name, "configure")
            node.wait_for_output(message)
        assert client.set_parameters(name, bundle=str(bundles["plain"]))[0].successful

        # 4. CUDA requested where there is none: fails; device auto falls back to the CPU
        # with a WARN in the log and in diagnostics.
        assert client.set_parameters(name, model="", device="cuda")[0].successful
        if not torch.cuda.is_available():
            assert not client.change_state(name, "configure")
            node.wait_for_output("device 'cuda' was requested but CUDA is not available")
            assert "device:=auto" in node.output()
        assert client.set_parameters(name, device="auto")[0].successful
        assert client.change_state(name, "configure")
        if not torch.cuda.is_available():
            node.wait_for_output("device auto: no CUDA device")
            warned = client.wait_diagnostics(name, lambda v: v["state"] == "inactive")
            assert warned["_level"] == "1" and "running on the CPU" in warned["_message"]
        assert client.get_state(name) == "inactive"

        # Configure-time parameters are locked while configured, with the reason.
        locked = client.set_parameters(name, num_views=3)[0]
        assert not locked.successful and "clean up" in locked.reason

        # Inactive: not even subscribed to images. Active: subscribed, keypoints flow.
        pub = client.node.create_publisher(Image, "/cam_c/image", RELIABLE)
        clouds = client.collect(PointCloud2, f"{name}/keypoints", RELIABLE)
        inactive = client.wait_diagnostics(name, lambda v: v["state"] == "inactive")
        assert inactive["subscribed"] == "false" and pub.get_subscription_count() == 0
        assert client.change_state(name, "activate")
        assert client.get_state(name) == "active"
        client.spin_until(lambda: pub.get_subscription_count() > 0, what="subscribe on activate")
        stamp = 90_000_000_001
        client.publish_until(
            pub,
            _photo_msg("chelsea", stamp, "lc_cam"),
            lambda: _cloud_with_stamp(clouds, stamp) is not None,
            what="keypoints from the activated node",
        )

        assert client.change_state(name, "deactivate")
        assert client.get_state(name) == "inactive"
        client.spin_until(lambda: pub.get_subscription_count() == 0, what="unsubscribe")
        assert client.change_state(name, "cleanup")
        assert client.get_state(name) == "unconfigured"
        node.wait_for_output("cleaned up")
        # Unconfigured again: configure-time parameters may change.
        assert client.set_parameters(name, num_views=3)[0].successful
        bad = client.set_parameters(name, readout="median")[0]
        assert not bad.successful and "argmax" in bad.reason
        assert node.alive, node.output()
    finally:
        code = node.stop()
    assert code == 0, node.output()


def _nan_backbone_bundle(root: Path) -> Path:
    """tiny saved as a local model whose first captured layer has one NaN key weight (a
    corrupt download, or an fp16 overflow): it loads and runs, and every map is NaN."""
    from skp_core.backbone import load_backbone
    from skp_core.bundle import Bundle, save_bundle
    from skp_core.config import default_config

    tiny = load_backbone("tiny")
    with torch.no_grad():
        tiny.unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2.to_k.weight[0, 0] = (
            torch.nan
        )
    model = root / "nan_model"
    tiny.vae.save_pretrained(model / "vae")
    tiny.unet.save_pretrained(model / "unet")
    method = default_config("tiny").with_overrides(**FAST)
    bundle = Bundle(
        context=torch.randn(method.num_tokens, tiny.context_dim, generator=torch.manual_seed(0)),
        selected_indices=torch.arange(method.top_k),
        backbone={"model": str(model), "fingerprint": load_backbone(str(model)).fingerprint},
        method=method.to_dict(),
    )
    return save_bundle(bundle, root / "nan_bundle")


def test_degenerate_maps_are_reported_not_published(client, tmp_path):
    name = "/skp_degenerate"
    bundle = _nan_backbone_bundle(tmp_path)
    args = param_args(bundle=bundle, device="cpu", diagnostics_period=0.2)
    args += ["-r", "__node:=skp_degenerate", "-r", "image:=/cam_d/image"]
    with node_process(keypoint_node_argv(args), tmp_path / "node.log") as node:
        node.wait_for_output("activated", STARTUP_TIMEOUT_S)
        pub = client.node.create_publisher(Image, "/cam_d/image", RELIABLE)
        clouds = client.collect(PointCloud2, f"{name}/keypoints", RELIABLE)
        client.spin_until(lambda: pub.get_subscription_count() > 0, what="node subscribed")
        degenerate: list[dict[str, str]] = []

        def reported() -> bool:
            for msg in client.diagnostics:
                values = diagnostic_values(msg, name)
                if values and int(values["frames_degenerate"]) > 0 and values["_level"] == "1":
                    degenerate.append(values)
            return bool(degenerate)

        client.publish_until(
            pub, _photo_msg("chelsea", 7, "nan_cam"), reported, what="a degenerate-map WARN"
        )
        assert "degenerate maps (flat or NaN" in degenerate[0]["_message"]
        assert clouds == []  # nonsense keypoints were never published
        node.wait_for_output("degenerate attention maps (flat or NaN) for keypoints")
        assert node.alive, node.output()


def test_autostart_failure_exits_nonzero_with_the_reason(tmp_path):
    missing = tmp_path / "missing_bundle"
    args = param_args(bundle=missing, device="cpu")
    node = NodeProcess(keypoint_node_argv(args), tmp_path / "node.log")
    try:
        code = node.wait_exit(STARTUP_TIMEOUT_S)
    finally:
        node.stop()
    output = node.output()
    assert code == 1, output
    assert "configure failed: cannot load the bundle" in output
    assert str(missing) in output
    assert "exiting with code 1" in output


def test_two_subjects_publish_every_keypoint_once_per_instance(client, bundles, tmp_path):
    name = "/skp_pair"
    args = param_args(bundle=bundles["landmarks"], device="cpu", num_subjects=2)
    args += ["-r", "__node:=skp_pair", "-r", "image:=/cam_p/image"]
    with node_process(keypoint_node_argv(args), tmp_path / "node.log") as node:
        node.wait_for_output("activated", STARTUP_TIMEOUT_S)
        pub = client.node.create_publisher(Image, "/cam_p/image", RELIABLE)
        clouds = client.collect(PointCloud2, f"{name}/keypoints", RELIABLE)
        landmark_clouds = client.collect(PointCloud2, f"{name}/landmarks", RELIABLE)
        msg = _photo_msg("chelsea", 5_000_000_000, "pair_cam")
        client.publish_until(
            pub, msg, lambda: clouds and landmark_clouds, what="keypoints of two instances"
        )
        ids, uv, _ = cloud_to_keypoints(clouds[0])
        instances = cloud_to_instances(clouds[0])
        assert ids.tolist() == list(range(NUM_KEYPOINTS)) * 2
        assert instances.tolist() == [0] * NUM_KEYPOINTS + [1] * NUM_KEYPOINTS
        assert in_image(uv, msg.width, msg.height)
        # Numbered left to right: instance 0's keypoints lie left of instance 1's on average.
        assert uv[:NUM_KEYPOINTS, 0].mean() <= uv[NUM_KEYPOINTS:, 0].mean()
        lm_ids, _, _ = cloud_to_keypoints(landmark_clouds[0])
        assert lm_ids.tolist() == list(range(NUM_LANDMARKS)) * 2
        assert (
            cloud_to_instances(landmark_clouds[0]).tolist()
            == [0] * NUM_LANDMARKS + [1] * NUM_LANDMARKS
        )
        assert node.alive, node.output()
