"""Two real processes exchange camera images over DDS, confined to loopback.

This is the foundation every node test stands on: the isolation environment, the Fast DDS
profile (large shared-memory segment) and the synthetic image source.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from ros_support import child_env, ros_process, wait_until
from skp_ros.camera_sweep import sample_photo, sweep_frame, sweep_intrinsics
from skp_ros.image_conversion import image_msg_to_array, image_msg_to_rgb

pytestmark = pytest.mark.ros


def test_environment_is_loopback_only():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 232
    # Jazzy's Fast DDS 2.14 reads FASTRTPS_*, Fast DDS 3 (Kilted) FASTDDS_*: both are set.
    for name in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        assert os.path.isfile(os.environ[name]), name


def test_image_source_process_delivers_sweep_frames(rclpy_context):
    width, height, frames_wanted = 512, 384, 20
    node = rclpy.create_node("transport_probe", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    received: list[Image] = []
    infos: list[CameraInfo] = []
    depths: list[Image] = []
    node.create_subscription(Image, "probe/image", received.append, qos_profile_sensor_data)
    node.create_subscription(CameraInfo, "probe/camera_info", infos.append, qos_profile_sensor_data)
    node.create_subscription(Image, "probe/depth", depths.append, qos_profile_sensor_data)
    args = [
        "-m", "skp_ros.image_source", "--ros-args",
        "-p", "topic:=probe/image", "-p", f"width:={width}", "-p", f"height:={height}",
        "-p", "rate_hz:=30.0", "-p", "frame_id:=probe_cam",
        "-p", "depth:=true", "-p", "depth_topic:=probe/depth",
    ]  # fmt: skip
    with ros_process(args, child_env()) as proc:
        wait_until(
            lambda: (
                (len(received) >= frames_wanted and infos and depths) or proc.poll() is not None
            ),
            spin=lambda t: executor.spin_once(timeout_sec=t),
            what=f"{frames_wanted} images from the image source",
        )
        assert proc.poll() is None, proc.stdout.read()
    executor.shutdown()
    node.destroy_node()

    photo = sample_photo("astronaut")
    expected = [sweep_frame(photo, i, width, height) for i in range(90)]
    stamps = []
    for msg in received[:frames_wanted]:
        assert (msg.width, msg.height, msg.encoding) == (width, height, "rgb8")
        assert msg.header.frame_id == "probe_cam"
        rgb = image_msg_to_rgb(msg)
        # Every received frame is bit-identical to one frame of the deterministic sweep.
        assert any(np.array_equal(rgb, e) for e in expected)
        stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
    assert np.all(np.diff(stamps) > 0), "stamps must increase"
    # Like a camera driver: camera_info beside the image (the sweep's pinhole) and a registered
    # 16UC1 depth image of the poster, each with its image's header.
    info = infos[0]
    assert (info.width, info.height, info.header.frame_id) == (width, height, "probe_cam")
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), sweep_intrinsics(width, height))
    depth = depths[0]
    assert (depth.encoding, depth.width, depth.height) == ("16UC1", width, height)
    millimetres = image_msg_to_array(depth)[..., 0]
    assert 1300 <= int(millimetres.min()) == int(millimetres.max()) <= 1700
