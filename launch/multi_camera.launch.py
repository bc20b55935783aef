r"""Launch one skp keypoint node, one model, for two cameras: ``front`` and ``rear``.

    ros2 launch skp_ros multi_camera.launch.py bundle:=/path/to/bundle use_depth:=true
    ros2 launch skp_ros multi_camera.launch.py bundle:=/path/to/bundle \
        front_image_topic:=/cam0/image_raw front_camera_info_topic:=

The node's ``cameras`` parameter is set to ``[front, rear]``: camera C reads ``C/image``,
``C/camera_info`` and ``C/depth`` (remapped here from ``C_image_topic``, ``C_camera_info_topic``
and ``C_depth_topic``, whose defaults follow a RealSense-style ``/C_camera/color/...`` layout)
and ``C/roi``, and publishes ``~/C/keypoints``, ``~/C/landmarks``, ``~/C/markers`` and
``~/C/debug_image``. The depth images are read only with ``use_depth:=true``. An empty topic
argument adds no remapping (camera_info then sits beside C's image topic). Every other argument
(bundle, device, params_file, autostart, use_sim_time, ...) and the node action itself come from
``keypoints.launch.py`` beside this file; see its docstring for the lifecycle handling.
"""

from __future__ import annotations

import importlib.util
import os

from launch.actions import OpaqueFunction

from launch import LaunchDescription

CAMERAS = ("front", "rear")
# Per camera: node input -> (default topic below /<camera>_camera/, what it carries).
INPUTS = {
    "image": ("color/image_raw", "Image topic"),
    "camera_info": ("color/camera_info", "sensor_msgs/CameraInfo topic"),
    "depth": ("aligned_depth_to_color/image_raw", "Registered depth image topic"),
}


def _single_camera_launch():
    """keypoints.launch.py, loaded as a module (a launch file is no importable module name)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keypoints.launch.py")
    spec = importlib.util.spec_from_file_location("skp_ros_keypoints_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate_launch_description() -> LaunchDescription:
    """The shared node arguments, three topic arguments per camera, one node."""
    single = _single_camera_launch()
    topics = {
        f"{camera}/{name}": (
            f"{camera}_{name}_topic",
            f"/{camera}_camera/{suffix}",
            f"{text} of the {camera} camera, remapped onto the node's `{camera}/{name}` "
            "(empty: no remapping).",
        )
        for camera in CAMERAS
        for name, (suffix, text) in INPUTS.items()
    }
    remaps = {topic: argument for topic, (argument, _, _) in topics.items()}
    return LaunchDescription(
        [
            *single.node_arguments(),
            *single.topic_arguments(topics),
            OpaqueFunction(
                function=single.keypoint_node,
                kwargs={"remaps": remaps, "parameters": {"cameras": list(CAMERAS)}},
            ),
        ]
    )
