"""The node as a robot uses it: camera geometry, depth, markers, ROI, enable, cameras, QoS.

Real node processes over DDS (loopback, in the test network namespace), fed from this process:

* one camera with camera_info, a depth image and a roi topic: the cloud's exact field layout;
  NaN positions before camera_info, rays at z = 1 with camera_info alone, and with a depth
  plane at a known distance metric points equal to the analytic back-projection (1e-3 m);
  ~/markers with the keypoints' names; keypoints of a ROI frame inside the ROI and nothing for
  an empty ROI; ~/enable pausing (the node leaves the image topic) and resuming; a
  ``qos_overrides`` start-up parameter making the image subscription RELIABLE;
* one node serving two cameras, whose keypoints equal what each camera gets from a node of
  its own, with one model (one configure, one detector) for both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from node_support import (
    STARTUP_TIMEOUT_S,
    RosClient,
    header,
    keypoint_node_argv,
    node_process,
    param_args,
    stamp_ns,
)
from rclpy.context import Context
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import String
from std_srvs.srv import SetBool
from visualization_msgs.msg import Marker, MarkerArray

from skp_ros.camera_sweep import sample_photo
from skp_ros.image_conversion import array_to_image_msg, rgb_to_image_msg
from skp_ros.keypoint_msgs import cloud_to_keypoints, cloud_to_points
from skp_ros.tiny_bundle import make_tiny_bundle

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = "/skp_keypoints"
FAST = {"num_views": 2, "image_size": 128}
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
FX, FY, CX, CY = 300.0, 310.0, 255.5, 191.5
PLANE_M = 2.0


@pytest.fixture(scope="module")
def client(module_rclpy_context: Context) -> Iterator[RosClient]:
    ros = RosClient(module_rclpy_context, name="skp_robot_test_client")
    yield ros
    ros.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "plain", method_overrides=FAST)


def _now_ns(client: RosClient) -> int:
    return client.node.get_clock().now().nanoseconds


def _camera_info(width: int, height: int, frame_id: str) -> CameraInfo:
    return CameraInfo(
        header=header(0, frame_id),
        width=width,
        height=height,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0],
    )


def _cloud(clouds: list[PointCloud2], stamp: int) -> PointCloud2 | None:
    return next((c for c in clouds if stamp_ns(c.header) == stamp), None)


def _send(client: RosClient, publisher, msg, clouds: list[PointCloud2], stamp: int) -> PointCloud2:
    client.publish_until(
        publisher, msg, lambda: _cloud(clouds, stamp) is not None, f"cloud {stamp}"
    )
    cloud = _cloud(clouds, stamp)
    assert cloud is not None
    return cloud


def test_one_camera_geometry_markers_roi_enable_and_qos(client, bundle, tmp_path):
    photo = sample_photo("chelsea")  # 451 x 300
    height, width = photo.shape[:2]
    args = [
        *param_args(
            bundle=bundle, device="cpu", diagnostics_period=0.2, use_depth=True,
            use_roi_topic=True, depth_window=3,
        ),
        "-r", "image:=/robot_cam/image_raw",
        "-r", "depth:=/robot_cam/depth/image_rect",
        "-r", "roi:=/robot_cam/object_roi",
        "-p", "qos_overrides./robot_cam/image_raw.subscription.reliability:=reliable",
    ]  # fmt: skip
    images = client.node.create_publisher(Image, "/robot_cam/image_raw", RELIABLE)
    infos = client.node.create_publisher(CameraInfo, "/robot_cam/camera_info", RELIABLE)
    depths = client.node.create_publisher(Image, "/robot_cam/depth/image_rect", RELIABLE)
    rois = client.node.create_publisher(RegionOfInterest, "/robot_cam/object_roi", RELIABLE)
    clouds = client.collect(PointCloud2, f"{NODE}/keypoints", RELIABLE)
    markers = client.collect(MarkerArray, f"{NODE}/markers", RELIABLE)
    info_msgs = client.collect(String, f"{NODE}/keypoint_info", LATCHED)
    with node_process(keypoint_node_argv(args), tmp_path / "node.log") as node:
        node.wait_for_output("activated", timeout=STARTUP_TIMEOUT_S)
        # The standard override made the image subscription RELIABLE (its default is
        # best_effort), and camera_info is looked for beside the remapped image topic.
        client.spin_until(
            lambda: bool(client.node.get_subscriptions_info_by_topic("/robot_cam/image_raw")),
            what="the node's image subscription",
        )
        (ours,) = client.node.get_subscriptions_info_by_topic("/robot_cam/image_raw")
        assert ours.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert client.node.get_subscriptions_info_by_topic("/robot_cam/camera_info")
        client.spin_until(lambda: bool(info_msgs), what="keypoint_info")
        names = [k["name"] for k in json.loads(info_msgs[-1].data)["keypoints"]]

        # 1. No camera_info yet: pixels only, positions NaN; the layout is exactly x..instance.
        stamp = _now_ns(client)
        cloud = _send(
            client, images, rgb_to_image_msg(photo, header(stamp, "cam_optical")), clouds, stamp
        )
        layout = [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields]
        assert layout == [
            ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1),
            ("z", 8, PointField.FLOAT32, 1), ("u", 12, PointField.FLOAT32, 1),
            ("v", 16, PointField.FLOAT32, 1), ("id", 20, PointField.UINT32, 1),
            ("score", 24, PointField.FLOAT32, 1), ("instance", 28, PointField.UINT32, 1),
        ]  # fmt: skip
        assert cloud.point_step == 32 and cloud.header.frame_id == "cam_optical"
        ids, uv, _ = cloud_to_keypoints(cloud)
        assert len(ids) == len(names) and np.isnan(cloud_to_points(cloud)).all()
        assert not cloud.is_dense

        # 2. camera_info, no matching depth: the undistorted ray at z = 1. camera_info is
        # best-effort on the node's side, so it is sent with every frame until it was used.
        for _ in range(20):
            infos.publish(_camera_info(width, height, "cam_optical"))
            stamp = _now_ns(client)
            msg = rgb_to_image_msg(photo, header(stamp, "cam_optical"))
            cloud = _send(client, images, msg, clouds, stamp)
            if np.isfinite(cloud_to_points(cloud)).all():
                break
        _, uv, _ = cloud_to_keypoints(cloud)
        xyz = cloud_to_points(cloud)
        np.testing.assert_allclose(xyz[:, 2], 1.0)
        np.testing.assert_allclose(xyz[:, 0], (uv[:, 0] - CX) / FX, atol=1e-6)
        np.testing.assert_allclose(xyz[:, 1], (uv[:, 1] - CY) / FY, atol=1e-6)

        # 3. A depth plane at 2 m (16UC1 millimetres, the image's stamp): metric points.
        plane = np.full((height, width), int(PLANE_M * 1000), dtype=np.uint16)
        for _ in range(20):
            stamp = _now_ns(client)
            depths.publish(array_to_image_msg(plane, "16UC1", header(stamp, "cam_optical")))
            msg = rgb_to_image_msg(photo, header(stamp, "cam_optical"))
            cloud = _send(client, images, msg, clouds, stamp)
            if np.isfinite(cloud_to_points(cloud)).all() and cloud_to_points(cloud)[0, 2] != 1:
                break
        _, uv, _ = cloud_to_keypoints(cloud)
        xyz = cloud_to_points(cloud)
        expected = np.stack(
            [(uv[:, 0] - CX) / FX * PLANE_M, (uv[:, 1] - CY) / FY * PLANE_M,
             np.full(len(uv), PLANE_M)], axis=1,
        )  # fmt: skip
        np.testing.assert_allclose(xyz, expected, atol=1e-3)

        # 4. Markers: a DELETEALL, then a sphere and a label per keypoint, named.
        client.spin_until(lambda: any(len(m.markers) > 1 for m in markers), what="a marker array")
        array = next(m for m in reversed(markers) if len(m.markers) > 1)
        assert array.markers[0].action == Marker.DELETEALL
        spheres = [m for m in array.markers if m.type == Marker.SPHERE]
        labels = [m.text for m in array.markers if m.type == Marker.TEXT_VIEW_FACING]
        assert len(spheres) == len(names) and sorted(labels) == sorted(names)
        assert all(abs(m.pose.position.z - PLANE_M) < 1e-3 for m in spheres)
        assert all(m.header.frame_id == "cam_optical" for m in spheres)

        # 5. A region of interest: keypoints come back in full-image pixels inside it.
        box = (150, 60, 200, 160)
        roi = RegionOfInterest(x_offset=box[0], y_offset=box[1], width=box[2], height=box[3])
        for _ in range(20):
            rois.publish(roi)
            stamp = _now_ns(client)
            cloud = _send(
                client, images, rgb_to_image_msg(photo, header(stamp, "c")), clouds, stamp
            )
            _, uv, _ = cloud_to_keypoints(cloud)
            margin = 0.1 * np.array(box[2:])
            low = np.array(box[:2]) - margin - 0.5
            high = np.array(box[:2]) + np.array(box[2:]) + margin - 0.5
            if ((uv >= low) & (uv <= high)).all():
                break
        assert ((uv >= low) & (uv <= high)).all(), (uv, low, high)
        # An empty ROI (nothing detected upstream): the frame is counted, nothing published.
        rois.publish(RegionOfInterest(x_offset=10, y_offset=10, width=0, height=0))

        def outside_counted() -> bool:
            stamp = _now_ns(client)
            rois.publish(RegionOfInterest(x_offset=10, y_offset=10, width=0, height=0))
            images.publish(rgb_to_image_msg(photo, header(stamp, "c")))
            values = client.wait_diagnostics(NODE)
            return int(values["frames_outside_roi"]) > 0

        client.spin_until(outside_counted, what="a frame outside the ROI", timeout=60)
        rois.publish(roi)

        # 6. ~/enable false: the node leaves the image topic, the model stays; true: back.
        response = client.call(SetBool, f"{NODE}/enable", SetBool.Request(data=False))
        assert response.success and "paused" in response.message
        client.spin_until(
            lambda: client.node.count_subscribers("/robot_cam/image_raw") == 0,
            what="the node leaving the image topic",
        )
        paused = client.wait_diagnostics(NODE, lambda v: v["enabled"] == "false")
        assert paused["_level"] == "0" and "paused" in paused["_message"]
        response = client.call(SetBool, f"{NODE}/enable", SetBool.Request(data=True))
        assert response.success
        client.spin_until(
            lambda: client.node.count_subscribers("/robot_cam/image_raw") == 1,
            what="the node back on the image topic",
        )
        stamp = _now_ns(client)
        _send(client, images, rgb_to_image_msg(photo, header(stamp, "c")), clouds, stamp)
        assert node.output().count("configured:") == 1  # never reloaded


def test_two_cameras_one_model_match_each_camera_alone(client, bundle, tmp_path):
    photos = {"front": sample_photo("chelsea"), "rear": sample_photo("coffee")}
    alone: dict[str, np.ndarray] = {}
    # Each camera alone: a node of its own on the plain topics.
    images = client.node.create_publisher(Image, "/solo/image", RELIABLE)
    clouds = client.collect(PointCloud2, "/solo/skp_keypoints/keypoints", RELIABLE)
    args = [*param_args(bundle=bundle, device="cpu"), "-r", "__ns:=/solo"]
    with node_process(keypoint_node_argv(args), tmp_path / "solo.log") as node:
        node.wait_for_output("activated", timeout=STARTUP_TIMEOUT_S)
        for index, (name, photo) in enumerate(photos.items()):
            stamp = 1_000 + index
            cloud = _send(
                client, images, rgb_to_image_msg(photo, header(stamp, name)), clouds, stamp
            )
            alone[name] = cloud_to_keypoints(cloud)[1]

    publishers = {
        name: client.node.create_publisher(Image, f"/duo/{name}/image", RELIABLE) for name in photos
    }
    outputs = {
        name: client.collect(PointCloud2, f"/duo/skp_keypoints/{name}/keypoints", RELIABLE)
        for name in photos
    }
    args = [*param_args(bundle=bundle, device="cpu"), "-p", "cameras:=[front, rear]",
            "-r", "__ns:=/duo"]  # fmt: skip
    with node_process(keypoint_node_argv(args), tmp_path / "duo.log") as node:
        node.wait_for_output("activated", timeout=STARTUP_TIMEOUT_S)
        stamp = 5_000
        msgs = {n: rgb_to_image_msg(p, header(stamp, f"{n}_optical")) for n, p in photos.items()}

        def both() -> bool:
            return all(_cloud(outputs[n], stamp) is not None for n in photos)

        for _ in range(20):
            for name, msg in msgs.items():
                publishers[name].publish(msg)
            try:
                client.spin_until(both, timeout=3.0, what="both cameras' clouds")
                break
            except TimeoutError:
                continue
        assert both()
        for name in photos:
            cloud = _cloud(outputs[name], stamp)
            assert cloud.header.frame_id == f"{name}_optical"
            # The same views and noise for each image; only float32 rounding differs, because a
            # batched convolution sums in another order (measured up to 0.005 px on a CI
            # machine after the sub-pixel refinement, 0 on others).
            np.testing.assert_allclose(cloud_to_keypoints(cloud)[1], alone[name], atol=0.02)
        log = node.output()
        assert log.count("configured:") == 1 and "camera(s): front, rear" in log
