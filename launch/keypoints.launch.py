"""Launch the skp keypoint node.

    ros2 launch skp_ros keypoints.launch.py bundle:=/path/to/bundle image_topic:=/camera/image_raw

Arguments left empty keep the value from ``params_file`` (default: the installed
``config/keypoints.yaml``), so the YAML stays the single place for defaults and a launch
argument only overrides what it names. The node configures and activates itself (its
``autostart`` parameter); for an external lifecycle manager set ``autostart: false`` in the
params file.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "skp_ros"
EXECUTABLE = "keypoint_node"
NODE_NAME = "skp_keypoints"
# Launch arguments passed on as node parameters of the same name when not empty.
STRING_OVERRIDES = ("bundle", "model", "device")


def _keypoint_node(context, *args, **kwargs) -> list:
    """Build the Node once the launch arguments are known, so empty ones can be left out."""

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    overrides: dict[str, object] = {name: arg(name) for name in STRING_OVERRIDES if arg(name)}
    debug = arg("debug").lower()
    if debug:
        overrides["debug_heatmap"] = debug == "true"
    parameters: list = [arg("params_file")]
    if overrides:
        parameters.append(overrides)
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            namespace=arg("namespace"),
            parameters=parameters,
            remappings=[("image", arg("image_topic"))],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "keypoints.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "namespace", default_value="", description="Namespace of the node (e.g. robot1)."
            ),
            DeclareLaunchArgument(
                "image_topic",
                default_value="image",
                description="Camera topic, remapped onto the node's `image` input "
                "(e.g. /camera/image_raw; with input_transport compressed the node reads "
                "<image_topic>/compressed).",
            ),
            DeclareLaunchArgument(
                "bundle",
                default_value="",
                description="Bundle directory written by skp-train (empty: from params_file).",
            ),
            DeclareLaunchArgument(
                "model",
                default_value="",
                description="Backbone override (empty: the bundle's backbone, or params_file).",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="",
                description="cpu | cuda | cuda:N (empty: from params_file).",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=default_params,
                description="YAML file with the node's parameters.",
            ),
            DeclareLaunchArgument(
                "debug",
                default_value="",
                choices=["", "true", "false"],
                description="true: blend attention heat maps into ~/debug_image "
                "(empty: from params_file).",
            ),
            OpaqueFunction(function=_keypoint_node),
        ]
    )
