"""Launch the skp keypoint node, a lifecycle node, on one camera.

    ros2 launch skp_ros keypoints.launch.py bundle:=/path/to/bundle image_topic:=/camera/image_raw

Arguments left empty keep the value from ``params_file`` (default: the installed
``config/keypoints.yaml``), so the YAML stays the single place for defaults and a launch
argument only overrides what it names; an empty topic argument adds no remapping (the node's
own topic name applies: ``camera_info`` then sits beside the image topic, as image_transport
names it). Only ``autostart`` and ``use_sim_time`` are always passed.

Lifecycle: the action is a ``launch_ros.actions.LifecycleNode`` (so launch tracks the node's
state transitions and ``ChangeState`` events reach it), but the transitions are driven by the
node itself: with its ``autostart`` parameter true (``autostart:=true``, the default) the
executable configures and activates itself and exits with code 1 if that fails, so
``ros2 launch`` reports a dead process instead of a silent, unconfigured node. launch_ros's own
``autostart`` keyword (Jazzy 0.26.7 and later) would send configure and activate from launch as
well, racing the node's own transitions; it is therefore passed as ``False`` where it exists and
left out on older launch_ros, which has no such keyword and never drives transitions by itself.
With ``autostart:=false`` the node waits, unconfigured, for a lifecycle manager.

``multi_camera.launch.py`` builds its node with :func:`keypoint_node` from this file.
"""

from __future__ import annotations

import inspect
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription

PACKAGE = "skp_ros"
EXECUTABLE = "keypoint_node"
NODE_NAME = "skp_keypoints"
# Launch argument -> node parameter, passed on when the argument is not empty.
STRING_OVERRIDES = {"bundle": "bundle", "model": "model", "device": "device"}
BOOL_OVERRIDES = {
    "debug": "debug_heatmap",
    "use_depth": "use_depth",
    "use_roi_topic": "use_roi_topic",
}
# Launch argument -> node parameter, always passed (their launch defaults are the node's).
BOOL_PARAMETERS = {"autostart": "autostart", "use_sim_time": "use_sim_time"}
# The node's inputs on one camera: node topic -> (launch argument, what it carries).
TOPICS = {
    "image": (
        "image_topic",
        "Camera image topic, remapped onto the node's `image` input (e.g. /camera/image_raw; "
        "with input_transport compressed the node reads <image_topic>/compressed).",
    ),
    "camera_info": (
        "camera_info_topic",
        "sensor_msgs/CameraInfo topic, remapped onto `camera_info` (empty: camera_info beside "
        "the image topic, e.g. /camera/camera_info for /camera/image_raw).",
    ),
    "depth": (
        "depth_topic",
        "Depth image registered to the colour camera (16UC1 mm or 32FC1 m), remapped onto "
        "`depth`; read only with use_depth true.",
    ),
    "roi": (
        "roi_topic",
        "sensor_msgs/RegionOfInterest topic, remapped onto `roi`; read only with "
        "use_roi_topic true.",
    ),
}
EMPTY_OR_BOOL = ["", "true", "false"]


def node_arguments() -> list:
    """The launch arguments every skp launch file shares: model, parameters, lifecycle, logs."""
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "keypoints.yaml")
    return [
        DeclareLaunchArgument(
            "namespace", default_value="", description="Namespace of the node (e.g. robot1)."
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
            description="auto | cpu | cuda | cuda:N | mps (empty: from params_file, whose "
            "auto takes CUDA when available, else the CPU with a warning).",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params,
            description="YAML file with the node's parameters.",
        ),
        DeclareLaunchArgument(
            "debug",
            default_value="",
            choices=EMPTY_OR_BOOL,
            description="true: blend attention heat maps into ~/debug_image "
            "(empty: from params_file).",
        ),
        DeclareLaunchArgument(
            "use_depth",
            default_value="",
            choices=EMPTY_OR_BOOL,
            description="true: metric 3-D keypoints from the depth topic "
            "(empty: from params_file).",
        ),
        DeclareLaunchArgument(
            "use_roi_topic",
            default_value="",
            choices=EMPTY_OR_BOOL,
            description="true: crop to the newest box on the roi topic (empty: from params_file).",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            choices=["true", "false"],
            description="true: the node configures and activates itself; false: it waits "
            "unconfigured for a lifecycle manager (overrides params_file).",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="false",
            choices=["true", "false"],
            description="true: stamps and timers follow /clock (bag replay, simulation).",
        ),
        DeclareLaunchArgument(
            "log_level",
            default_value="",
            description="debug | info | warn | error | fatal, or LOGGER:=LEVEL "
            "(--ros-args --log-level; empty: info).",
        ),
    ]


def topic_arguments(topics: dict[str, tuple[str, str, str]]) -> list:
    """One launch argument per input: ``{node topic: (argument, default, description)}``."""
    return [
        DeclareLaunchArgument(argument, default_value=default, description=description)
        for argument, default, description in topics.values()
    ]


def _launch_autostart_off() -> dict:
    """``autostart=False`` where launch_ros's Node has that keyword, else nothing.

    The node drives its own transitions (module docstring); launch_ros before Jazzy 0.26.7
    rejects the unknown keyword, so it is only passed where some constructor declares it.
    """
    for cls in LifecycleNode.__mro__:
        init = vars(cls).get("__init__")
        try:
            keywords = inspect.signature(init).parameters if init is not None else {}
        except (TypeError, ValueError):  # a C-level __init__ without a signature
            continue
        if "autostart" in keywords:
            return {"autostart": False}
    return {}


def keypoint_node(context, remaps: dict[str, str], parameters: dict | None = None) -> list:
    """The LifecycleNode action, built once the launch arguments are known (OpaqueFunction).

    ``remaps`` maps node topics to the launch arguments naming their targets (an empty
    argument adds no remapping); ``parameters`` are fixed node parameters of the calling
    launch file (e.g. ``cameras``), placed before the launch-argument overrides.
    """

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    overrides: dict[str, object] = dict(parameters or {})
    overrides.update({param: arg(name) for name, param in STRING_OVERRIDES.items() if arg(name)})
    for name, param in (BOOL_OVERRIDES | BOOL_PARAMETERS).items():
        if arg(name):
            overrides[param] = arg(name).lower() == "true"
    log_level = arg("log_level")
    return [
        LifecycleNode(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            namespace=arg("namespace"),
            parameters=[arg("params_file"), overrides],
            remappings=[
                (topic, arg(argument)) for topic, argument in remaps.items() if arg(argument)
            ],
            ros_arguments=["--log-level", log_level] if log_level else None,
            output="screen",
            emulate_tty=True,
            **_launch_autostart_off(),
        )
    ]


def generate_launch_description() -> LaunchDescription:
    """One camera: the node's plain ``image``, ``camera_info``, ``depth`` and ``roi`` inputs."""
    topics = {topic: (argument, "", text) for topic, (argument, text) in TOPICS.items()}
    remaps = {topic: argument for topic, (argument, _, _) in topics.items()}
    return LaunchDescription(
        [
            *node_arguments(),
            *topic_arguments(topics),
            OpaqueFunction(function=keypoint_node, kwargs={"remaps": remaps}),
        ]
    )
