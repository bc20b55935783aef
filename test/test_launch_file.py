"""launch/keypoints.launch.py, checked without ROS 2 `launch` (not installable here).

What is checked HERE:

* The launch file is loaded through minimal stand-ins of the `launch`, `launch.actions`,
  `launch.substitutions`, `launch_ros.actions` and `ament_index_python.packages` APIs it uses
  (injected into sys.modules for these tests only). The stand-ins record constructor
  arguments; `LaunchConfiguration.perform`, `DeclareLaunchArgument` defaults/choices and
  `OpaqueFunction` are evaluated like launch does.
* From the recorded `Node` action the node command line is built following launch_ros
  (Jazzy) `Node`: ``<prefix>/lib/skp_ros/keypoint_node --ros-args -r __node:=NAME -r
  __ns:=/NS --params-file FILE... -r image:=TOPIC``, where each parameter dict becomes a
  temporary YAML file keyed by the full node name, as launch_ros writes it. The exact
  command line and that generated file are compared to expectations.
* The shipped config/keypoints.yaml sets every node parameter, only node parameters, with
  valid values of the declared types, under a key that matches the node in any namespace.
* The node is then RUN with exactly that command line (``python -m skp_ros.keypoint_node``
  standing in for the installed executable) in a namespace, and must come up, take its
  parameters from both files (checked over the get_parameters service) and publish
  keypoints for images on the remapped topic.

What only a real ROS 2 install checks: that `ros2 launch skp_ros keypoints.launch.py` finds
the package through the ament index, that the real launch/launch_ros accept these calls
(signatures, `choices`, `emulate_tty`), and `ros2 launch`'s own process handling (SIGINT on
Ctrl-C; the node exits 0 on SIGINT, which is checked here against the node directly).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import yaml
from bundle_support import make_tiny_bundle
from node_support import (
    STARTUP_TIMEOUT_S,
    NodeProcess,
    RosClient,
    header,
    in_image,
    stamp_ns,
)
from rclpy.context import Context
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2

from ros_support import REPO_ROOT
from skp_ros.camera_sweep import sample_photo
from skp_ros.image_conversion import rgb_to_image_msg
from skp_ros.keypoint_msgs import cloud_to_keypoints
from skp_ros.parameters import SPECS, check_value

LAUNCH_FILE = REPO_ROOT / "launch" / "keypoints.launch.py"
PARAMS_FILE = REPO_ROOT / "config" / "keypoints.yaml"
# Where the stand-in ament index says the package is installed (share/ is the source tree,
# which has the same launch/ and config/ layout as the installed share directory).
FAKE_PREFIX = Path("/opt/skp_install")
ARGUMENTS = {"namespace", "image_topic", "bundle", "model", "device", "params_file", "debug"}


# --------------------------------------------------------------------------- stand-ins


class LaunchContext:
    """What the stand-ins need of launch.LaunchContext: the launch configurations."""

    def __init__(self, arguments: dict[str, str]) -> None:
        self.launch_configurations: dict[str, str] = dict(arguments)


class Recorded:
    """Base of the stand-in actions: keeps the constructor arguments for inspection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class LaunchDescription(Recorded):
    pass


class DeclareLaunchArgument(Recorded):
    def __init__(
        self,
        name: str,
        *,
        default_value: str | None = None,
        description: str = "",
        choices: list[str] | None = None,
    ) -> None:
        super().__init__(name, default_value=default_value, description=description)
        self.name, self.default_value, self.choices = name, default_value, choices

    def execute(self, context: LaunchContext) -> None:
        """As launch does: keep a given value, else use the default; enforce choices."""
        configs = context.launch_configurations
        if self.name not in configs:
            if self.default_value is None:
                raise RuntimeError(f"required launch argument {self.name!r} not given")
            configs[self.name] = self.default_value
        if self.choices is not None and configs[self.name] not in self.choices:
            raise RuntimeError(f"{self.name}={configs[self.name]!r} not in {self.choices}")


class OpaqueFunction(Recorded):
    def __init__(self, *, function: Any, args: Any = None, kwargs: Any = None) -> None:
        super().__init__(function=function)
        self.function, self.f_args, self.f_kwargs = function, args or [], kwargs or {}

    def execute(self, context: LaunchContext) -> list[Any]:
        return list(self.function(context, *self.f_args, **self.f_kwargs) or [])


class LaunchConfiguration(Recorded):
    def __init__(self, variable_name: str, *, default: str | None = None) -> None:
        super().__init__(variable_name, default=default)
        self.variable_name, self.default = variable_name, default

    def perform(self, context: LaunchContext) -> str:
        value = context.launch_configurations.get(self.variable_name, self.default)
        if value is None:
            raise RuntimeError(f"launch configuration {self.variable_name!r} does not exist")
        return value


class Node(Recorded):
    """launch_ros.actions.Node stand-in: records everything, builds nothing."""


def _ament_share(package: str) -> str:
    if package != "skp_ros":
        raise LookupError(f"package {package!r} not found")  # PackageNotFoundError's base
    return str(REPO_ROOT)


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


@pytest.fixture()
def launch_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The launch file, imported against the stand-ins (sys.modules restored afterwards)."""
    fakes = {
        "launch": _module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": _module(
            "launch.actions",
            DeclareLaunchArgument=DeclareLaunchArgument,
            OpaqueFunction=OpaqueFunction,
        ),
        "launch.substitutions": _module(
            "launch.substitutions", LaunchConfiguration=LaunchConfiguration
        ),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", Node=Node),
        "ament_index_python": _module("ament_index_python"),
        "ament_index_python.packages": _module(
            "ament_index_python.packages", get_package_share_directory=_ament_share
        ),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("skp_keypoints_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate(module: types.ModuleType, arguments: dict[str, str]) -> Node:
    """Run the launch description like `ros2 launch ... k:=v`; return the one Node action."""
    description = module.generate_launch_description()
    context = LaunchContext(arguments)
    nodes = []
    for entity in description.args[0]:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)
        elif isinstance(entity, OpaqueFunction):
            nodes += entity.execute(context)
        else:
            raise AssertionError(f"unexpected launch entity {entity!r}")
    assert len(nodes) == 1 and isinstance(nodes[0], Node)
    return nodes[0]


def _absolute_namespace(namespace: str) -> str:
    """launch_ros: prefix_namespace(None, ns) then make_namespace_absolute."""
    namespace = namespace if namespace == "/" else namespace.rstrip("/")
    return namespace if namespace.startswith("/") else "/" + namespace


def node_command(node: Node, params_dir: Path) -> list[str]:
    """The command line launch_ros (Jazzy) builds for this Node action."""
    kw = node.kwargs
    executable = str(FAKE_PREFIX / "lib" / kw["package"] / kw["executable"])
    cmd = [executable, *kw.get("arguments", [])]
    if kw.get("ros_arguments"):
        cmd += ["--ros-args", *kw["ros_arguments"]]
    cmd += ["--ros-args"]
    name = kw.get("name")
    if name is not None:
        cmd += ["-r", f"__node:={name}"]
    namespace = None
    if kw.get("namespace") is not None:
        namespace = _absolute_namespace(kw["namespace"])
        cmd += ["-r", f"__ns:={namespace}"]
    full_name = None
    if name is not None and namespace is not None:
        full_name = f"{namespace.rstrip('/')}/{name}"
    for index, params in enumerate(kw.get("parameters", [])):
        if isinstance(params, dict):
            path = params_dir / f"launch_params_{index}"
            path.write_text(yaml.dump({full_name or "/**": {"ros__parameters": params}}))
            cmd += ["--params-file", str(path)]
        else:
            cmd += ["--params-file", str(params)]
    for source, target in kw.get("remappings", []):
        cmd += ["-r", f"{source}:={target}"]
    return cmd


# --------------------------------------------------------------------------- static checks


def test_launch_arguments_are_declared_with_descriptions(launch_module):
    description = launch_module.generate_launch_description()
    declared = {e.name: e for e in description.args[0] if isinstance(e, DeclareLaunchArgument)}
    assert set(declared) == ARGUMENTS
    assert all(e.kwargs["description"] for e in declared.values())
    assert declared["params_file"].default_value == str(REPO_ROOT / "config" / "keypoints.yaml")


def test_default_command_line(launch_module, tmp_path):
    node = evaluate(launch_module, {})
    assert node.kwargs["package"] == "skp_ros" and node.kwargs["executable"] == "keypoint_node"
    assert node_command(node, tmp_path) == [
        "/opt/skp_install/lib/skp_ros/keypoint_node",
        "--ros-args",
        "-r", "__node:=skp_keypoints",
        "-r", "__ns:=/",
        "--params-file", str(PARAMS_FILE),
        "-r", "image:=image",
    ]  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # no overrides: no generated parameter file


def test_command_line_with_overrides(launch_module, tmp_path):
    node = evaluate(
        launch_module,
        {
            "namespace": "robot1",
            "image_topic": "/camera/image_raw",
            "bundle": "/data/bundles/cats",
            "device": "cpu",
            "debug": "true",
        },
    )
    cmd = node_command(node, tmp_path)
    generated = tmp_path / "launch_params_1"
    assert cmd == [
        "/opt/skp_install/lib/skp_ros/keypoint_node",
        "--ros-args",
        "-r", "__node:=skp_keypoints",
        "-r", "__ns:=/robot1",
        "--params-file", str(PARAMS_FILE),
        "--params-file", str(generated),
        "-r", "image:=/camera/image_raw",
    ]  # fmt: skip
    assert yaml.safe_load(generated.read_text()) == {
        "/robot1/skp_keypoints": {
            "ros__parameters": {
                "bundle": "/data/bundles/cats",
                "device": "cpu",
                "debug_heatmap": True,
            }
        }
    }


def test_bad_debug_value_is_rejected(launch_module):
    with pytest.raises(RuntimeError, match="not in"):
        evaluate(launch_module, {"debug": "yes"})


def test_params_file_sets_every_parameter_with_valid_values():
    document = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(document) == ["/**/skp_keypoints"]
    values = document["/**/skp_keypoints"]["ros__parameters"]
    assert set(values) == set(SPECS), set(values) ^ set(SPECS)
    for name, value in values.items():
        assert check_value(name, value) is None, check_value(name, value)
        # The shipped file documents the defaults: the table and the YAML must agree.
        assert value == SPECS[name].default, name


# --------------------------------------------------------------------------- the real process


@pytest.fixture()
def context() -> Iterator[Context]:
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


@pytest.mark.ros
@pytest.mark.slow
def test_node_runs_with_the_launch_command_line(launch_module, context, tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", method_overrides={"num_views": 2})
    # The shipped YAML with one value changed, to prove the file reaches the namespaced node.
    params_file = tmp_path / "keypoints.yaml"
    shutil.copy(PARAMS_FILE, params_file)
    text = params_file.read_text()
    assert "    diagnostics_period: 1.0\n" in text
    params_file.write_text(text.replace("diagnostics_period: 1.0", "diagnostics_period: 0.25"))

    node_action = evaluate(
        launch_module,
        {
            "namespace": "robot1",
            "image_topic": "/cam_launch/image_raw",
            "bundle": str(bundle),
            "device": "cpu",
            "params_file": str(params_file),
        },
    )
    params_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    cmd = node_command(node_action, params_dir)
    assert cmd[0] == "/opt/skp_install/lib/skp_ros/keypoint_node"
    argv = [sys.executable, "-m", "skp_ros.keypoint_node", *cmd[1:]]

    client = RosClient(context)
    node = NodeProcess(argv, tmp_path / "node.log")
    try:
        node.wait_for_output("activated", STARTUP_TIMEOUT_S)
        name = "/robot1/skp_keypoints"
        values = client.get_parameters(
            name, ["diagnostics_period", "device", "bundle", "debug_heatmap", "readout"]
        )
        assert values == {
            "diagnostics_period": 0.25,  # from the params file
            "device": "cpu",  # the launch override beats the file's "cuda"
            "bundle": str(bundle),
            "debug_heatmap": False,
            "readout": "subpixel",
        }
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub = client.node.create_publisher(Image, "/cam_launch/image_raw", qos)
        clouds: list[PointCloud2] = client.collect(PointCloud2, f"{name}/keypoints", qos)
        stamp = 123_456_789_000
        photo = sample_photo("coffee")
        client.publish_until(
            pub,
            rgb_to_image_msg(photo, header(stamp, "launch_cam")),
            lambda: any(stamp_ns(c.header) == stamp for c in clouds),
            what="keypoints from the launched node",
        )
        cloud = next(c for c in clouds if stamp_ns(c.header) == stamp)
        assert cloud.header.frame_id == "launch_cam"
        ids, uv, _ = cloud_to_keypoints(cloud)
        assert len(ids) == 6 and np.all(np.isfinite(uv))
        assert in_image(uv, photo.shape[1], photo.shape[0])
    finally:
        code = node.stop()
        client.close()
    assert code == 0, node.output()
