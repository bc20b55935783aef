"""launch/keypoints.launch.py and launch/multi_camera.launch.py, checked without ROS 2 `launch`.

`launch` and `launch_ros` are not installable here (../shared/ROS_NOTES.md). What is checked HERE:

* Each launch file is loaded through minimal stand-ins of the `launch`, `launch.actions`,
  `launch.substitutions`, `launch_ros.actions` and `ament_index_python.packages` APIs it uses
  (injected into sys.modules for these tests only). The stand-ins record constructor
  arguments; `LaunchConfiguration.perform`, `DeclareLaunchArgument` defaults/choices and
  `OpaqueFunction` (with its kwargs) are evaluated like launch does. The `launch_ros` stand-in
  comes in two versions: Jazzy 0.26.7+ (Node has an `autostart` keyword, default False, with
  which launch itself would send configure + activate) and 0.26.6 and older (no such keyword:
  passing it is a TypeError, as ExecuteProcess raises). `LifecycleNode` requires `name` and
  `namespace` as keywords, as launch_ros's does.
* From the recorded `LifecycleNode` action the node command line is built following launch_ros
  (Jazzy) `Node`: ``<prefix>/lib/skp_ros/keypoint_node [--ros-args ROS_ARGUMENTS] --ros-args
  -r __node:=NAME -r __ns:=/NS --params-file FILE... -r from:=to...``, where each parameter
  dict becomes a temporary YAML file keyed by the full node name, as launch_ros writes it. The
  exact command line and that generated file are compared to expectations.
* The shipped config/keypoints.yaml sets every node parameter, only node parameters, with
  valid values of the declared types, under a key that matches the node in any namespace.
* The node is then RUN with exactly that command line (``python -m skp_ros.keypoint_node``
  standing in for the installed executable) in a namespace, and must come up, take its
  parameters from both files (checked over the get_parameters service) and publish keypoints
  for images on the remapped topic; with autostart:=false it must stay unconfigured
  (get_state) until a lifecycle manager (here: the test) configures it; and from the
  multi-camera file's command line it must publish ``~/front/keypoints`` and
  ``~/rear/keypoints`` for images on the default remapped camera topics.

What only a real ROS 2 install checks: that `ros2 launch skp_ros keypoints.launch.py` finds
the package through the ament index, that the real launch/launch_ros accept these calls
(signatures, `choices`, `emulate_tty`), that LifecycleNode's event handling works with a node
that transitions itself, and `ros2 launch`'s own process handling (SIGINT on Ctrl-C; the node
exits 0 on SIGINT, which is checked here against the node directly).
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil
import sys
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
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
from skp_ros.tiny_bundle import make_tiny_bundle

LAUNCH_DIR = REPO_ROOT / "launch"
PARAMS_FILE = REPO_ROOT / "config" / "keypoints.yaml"
# Where the stand-in ament index says the package is installed (share/ is the source tree,
# which has the same launch/ and config/ layout as the installed share directory).
FAKE_PREFIX = Path("/opt/skp_install")
EXECUTABLE = str(FAKE_PREFIX / "lib" / "skp_ros" / "keypoint_node")
NODE_ARGUMENTS = {
    "namespace",
    "bundle",
    "model",
    "device",
    "params_file",
    "debug",
    "use_depth",
    "use_roi_topic",
    "autostart",
    "use_sim_time",
    "log_level",
}
# keypoints.launch.py: launch argument -> the node topic it remaps.
TOPIC_ARGUMENTS = {
    "image_topic": "image",
    "camera_info_topic": "camera_info",
    "depth_topic": "depth",
    "roi_topic": "roi",
}
# multi_camera.launch.py: launch argument -> (node topic, default target).
MULTI_CAMERA_TOPICS = {
    f"{camera}_{name}_topic": (f"{camera}/{name}", f"/{camera}_camera/{target}")
    for camera in ("front", "rear")
    for name, target in (
        ("image", "color/image_raw"),
        ("camera_info", "color/camera_info"),
        ("depth", "aligned_depth_to_color/image_raw"),
    )
}


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
        if choices is not None and default_value is not None and default_value not in choices:
            # launch raises this at construction too
            raise RuntimeError(f"default {default_value!r} of {name!r} not in {choices}")

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


# launch_ros.actions.Node's keywords besides `executable` (Jazzy; `autostart` from 0.26.7 on).
NODE_KEYWORDS = (
    "package",
    "name",
    "namespace",
    "exec_name",
    "parameters",
    "remappings",
    "autostart",
    "ros_arguments",
    "arguments",
)
# The launch.actions.ExecuteProcess keywords the launch files may pass through Node.
EXECUTE_PROCESS_KEYWORDS = {"output", "emulate_tty"}


def _node_class(keywords: tuple[str, ...]) -> type:
    """A launch_ros.actions.Node stand-in with this keyword set: records, builds nothing.

    Its ``__init__`` shows the real signature to ``inspect``; keywords that neither Node nor
    ExecuteProcess knows fail with TypeError, as ExecuteProcess.__init__ fails on them.
    """
    kind = inspect.Parameter.KEYWORD_ONLY
    signature = inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
            inspect.Parameter("executable", kind),
            *(inspect.Parameter(name, kind, default=None) for name in keywords),
            inspect.Parameter("process", inspect.Parameter.VAR_KEYWORD),
        ]
    )

    def __init__(self: Recorded, **kwargs: Any) -> None:
        process = signature.bind(self, **kwargs).arguments.get("process", {})
        unknown = sorted(set(process) - EXECUTE_PROCESS_KEYWORDS)
        if unknown:
            raise TypeError(f"__init__() got an unexpected keyword argument {unknown[0]!r}")
        self.args, self.kwargs = (), kwargs

    __init__.__signature__ = signature
    return type("Node", (Recorded,), {"__init__": __init__})


def _lifecycle_node(base: type) -> type:
    """launch_ros.actions.LifecycleNode over `base`: `name` and `namespace` are required."""

    class LifecycleNode(base):
        def __init__(self, *, name: Any, namespace: Any, **kwargs: Any) -> None:
            super().__init__(name=name, namespace=namespace, **kwargs)

    return LifecycleNode


Node = _node_class(NODE_KEYWORDS)  # Jazzy 0.26.7+
OldNode = _node_class(tuple(k for k in NODE_KEYWORDS if k != "autostart"))  # 0.26.6 and older
LifecycleNode = _lifecycle_node(Node)
OldLifecycleNode = _lifecycle_node(OldNode)


def _ament_share(package: str) -> str:
    if package != "skp_ros":
        raise LookupError(f"package {package!r} not found")  # PackageNotFoundError's base
    return str(REPO_ROOT)


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def load_launch_file(
    monkeypatch: pytest.MonkeyPatch, file_name: str, old_launch_ros: bool = False
) -> types.ModuleType:
    """A launch file, imported against the stand-ins (sys.modules restored afterwards)."""
    node, lifecycle = (OldNode, OldLifecycleNode) if old_launch_ros else (Node, LifecycleNode)
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
        "launch_ros.actions": _module("launch_ros.actions", Node=node, LifecycleNode=lifecycle),
        "ament_index_python": _module("ament_index_python"),
        "ament_index_python.packages": _module(
            "ament_index_python.packages", get_package_share_directory=_ament_share
        ),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(f"skp_test_{file_name}", LAUNCH_DIR / file_name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def launch_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return load_launch_file(monkeypatch, "keypoints.launch.py")


@pytest.fixture()
def multi_camera_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return load_launch_file(monkeypatch, "multi_camera.launch.py")


def declared_arguments(module: types.ModuleType) -> dict[str, DeclareLaunchArgument]:
    entities = module.generate_launch_description().args[0]
    declared = [e for e in entities if isinstance(e, DeclareLaunchArgument)]
    assert len({e.name for e in declared}) == len(declared), "an argument declared twice"
    return {e.name: e for e in declared}


def evaluate(module: types.ModuleType, arguments: dict[str, str]) -> Node:
    """Run the launch description like `ros2 launch ... k:=v`; return the one node action."""
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
    unknown = set(arguments) - {
        e.name for e in description.args[0] if isinstance(e, DeclareLaunchArgument)
    }
    assert not unknown, f"arguments the launch file does not declare: {unknown}"
    assert len(nodes) == 1, nodes
    assert type(nodes[0]).__name__ == "LifecycleNode", nodes[0]
    return nodes[0]


def _absolute_namespace(namespace: str) -> str:
    """launch_ros: prefix_namespace(None, ns) then make_namespace_absolute."""
    namespace = namespace if namespace == "/" else namespace.rstrip("/")
    return namespace if namespace.startswith("/") else "/" + namespace


def node_command(node: Node, params_dir: Path) -> list[str]:
    """The command line launch_ros (Jazzy) builds for this Node action."""
    kw = node.kwargs
    executable = str(FAKE_PREFIX / "lib" / kw["package"] / kw["executable"])
    cmd = [executable, *(kw.get("arguments") or [])]
    if kw.get("ros_arguments") is not None:
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
    for index, params in enumerate(kw.get("parameters") or []):
        if isinstance(params, dict):
            path = params_dir / f"launch_params_{index}"
            path.write_text(yaml.dump({full_name or "/**": {"ros__parameters": params}}))
            cmd += ["--params-file", str(path)]
        else:
            cmd += ["--params-file", str(params)]
    for source, target in kw.get("remappings") or []:
        cmd += ["-r", f"{source}:={target}"]
    return cmd


def generated_parameters(cmd: list[str], full_name: str) -> dict[str, Any]:
    """The node parameters of the one generated (dict) parameter file of a command line."""
    files = [Path(cmd[i + 1]) for i, arg in enumerate(cmd) if arg == "--params-file"]
    assert files[0] == PARAMS_FILE or files[0].name == "keypoints.yaml", files
    (generated,) = files[1:]
    document = yaml.safe_load(generated.read_text())
    assert list(document) == [full_name]
    return document[full_name]["ros__parameters"]


def remappings(cmd: list[str]) -> list[str]:
    """The `-r from:=to` rules of a command line, without __node/__ns."""
    return [
        cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-r" and not cmd[i + 1].startswith("__")
    ]


# --------------------------------------------------------------------------- static checks


def test_launch_arguments_are_declared_with_descriptions(launch_module):
    declared = declared_arguments(launch_module)
    assert set(declared) == NODE_ARGUMENTS | set(TOPIC_ARGUMENTS)
    assert all(e.kwargs["description"] for e in declared.values())
    assert declared["params_file"].default_value == str(PARAMS_FILE)
    assert (declared["autostart"].default_value, declared["autostart"].choices) == (
        "true",
        ["true", "false"],
    )
    assert (declared["use_sim_time"].default_value, declared["use_sim_time"].choices) == (
        "false",
        ["true", "false"],
    )
    for name in ("debug", "use_depth", "use_roi_topic"):
        assert (declared[name].default_value, declared[name].choices) == (
            "",
            ["", "true", "false"],
        )
    others = set(declared) - {"params_file", "autostart", "use_sim_time"}
    assert all(declared[name].default_value == "" for name in others)


def test_default_command_line(launch_module, tmp_path):
    node = evaluate(launch_module, {})
    kw = node.kwargs
    assert (kw["package"], kw["executable"], kw["name"]) == (
        "skp_ros",
        "keypoint_node",
        "skp_keypoints",
    )
    # The node transitions itself; launch_ros's own autostart would race it.
    assert kw["autostart"] is False
    cmd = node_command(node, tmp_path)
    assert cmd == [
        EXECUTABLE,
        "--ros-args",
        "-r", "__node:=skp_keypoints",
        "-r", "__ns:=/",
        "--params-file", str(PARAMS_FILE),
        "--params-file", str(tmp_path / "launch_params_1"),
    ]  # fmt: skip
    # Only the two always-passed values: everything else stays the YAML's.
    assert generated_parameters(cmd, "/skp_keypoints") == {
        "autostart": True,
        "use_sim_time": False,
    }


def test_older_launch_ros_without_the_autostart_keyword(monkeypatch, tmp_path):
    """Jazzy's launch_ros before 0.26.7 has no `autostart`: not passed, same command line."""
    old = load_launch_file(monkeypatch, "keypoints.launch.py", old_launch_ros=True)
    node = evaluate(old, {"autostart": "false"})
    assert "autostart" not in node.kwargs
    cmd = node_command(node, tmp_path)
    assert generated_parameters(cmd, "/skp_keypoints")["autostart"] is False
    # And the stand-in really rejects it, as ExecuteProcess does.
    with pytest.raises(TypeError, match="autostart"):
        OldLifecycleNode(executable="x", name="n", namespace="", autostart=False)


def test_command_line_with_overrides(launch_module, tmp_path):
    node = evaluate(
        launch_module,
        {
            "namespace": "robot1",
            "image_topic": "/camera/color/image_raw",
            "camera_info_topic": "/camera/color/camera_info_rect",
            "depth_topic": "/camera/aligned_depth_to_color/image_raw",
            "roi_topic": "/detector/roi",
            "bundle": "/data/bundles/cats",
            "model": "tiny",
            "device": "cpu",
            "debug": "true",
            "use_depth": "true",
            "use_roi_topic": "false",
            "autostart": "false",
            "use_sim_time": "true",
            "log_level": "debug",
        },
    )
    cmd = node_command(node, tmp_path)
    generated = tmp_path / "launch_params_1"
    assert cmd == [
        EXECUTABLE,
        "--ros-args", "--log-level", "debug",
        "--ros-args",
        "-r", "__node:=skp_keypoints",
        "-r", "__ns:=/robot1",
        "--params-file", str(PARAMS_FILE),
        "--params-file", str(generated),
        "-r", "image:=/camera/color/image_raw",
        "-r", "camera_info:=/camera/color/camera_info_rect",
        "-r", "depth:=/camera/aligned_depth_to_color/image_raw",
        "-r", "roi:=/detector/roi",
    ]  # fmt: skip
    assert yaml.safe_load(generated.read_text()) == {
        "/robot1/skp_keypoints": {
            "ros__parameters": {
                "bundle": "/data/bundles/cats",
                "model": "tiny",
                "device": "cpu",
                "debug_heatmap": True,
                "use_depth": True,
                "use_roi_topic": False,
                "autostart": False,
                "use_sim_time": True,
            }
        }
    }
    for name, value in generated_parameters(cmd, "/robot1/skp_keypoints").items():
        if name in SPECS:  # use_sim_time is rclpy's own
            assert check_value(name, value) is None, (name, value)


@pytest.mark.parametrize("argument", sorted(TOPIC_ARGUMENTS))
def test_each_topic_argument_remaps_its_input_only_when_set(launch_module, tmp_path, argument):
    topic = TOPIC_ARGUMENTS[argument]
    cmd = node_command(evaluate(launch_module, {argument: "/elsewhere/x"}), tmp_path)
    assert remappings(cmd) == [f"{topic}:=/elsewhere/x"]
    # Blank (as `argument:=' '` would give) is empty too: no remap, the node's own name applies.
    assert remappings(node_command(evaluate(launch_module, {argument: " "}), tmp_path)) == []


@pytest.mark.parametrize(
    ("argument", "parameter"),
    [("debug", "debug_heatmap"), ("use_depth", "use_depth"), ("use_roi_topic", "use_roi_topic")],
)
def test_optional_switches_are_passed_only_when_set(launch_module, tmp_path, argument, parameter):
    for value, expected in (("true", True), ("false", False)):
        cmd = node_command(evaluate(launch_module, {argument: value}), tmp_path)
        assert generated_parameters(cmd, "/skp_keypoints")[parameter] is expected
    cmd = node_command(evaluate(launch_module, {}), tmp_path)
    assert parameter not in generated_parameters(cmd, "/skp_keypoints")


@pytest.mark.parametrize(
    "arguments",
    [{"debug": "yes"}, {"use_depth": "1"}, {"autostart": ""}, {"use_sim_time": "True"}],
)
def test_bad_switch_values_are_rejected(launch_module, arguments):
    with pytest.raises(RuntimeError, match="not in"):
        evaluate(launch_module, arguments)


def test_multi_camera_arguments_extend_the_shared_ones(launch_module, multi_camera_module):
    declared = declared_arguments(multi_camera_module)
    assert set(declared) == NODE_ARGUMENTS | set(MULTI_CAMERA_TOPICS)
    single = declared_arguments(launch_module)
    for name in NODE_ARGUMENTS:  # the same declarations, not copies that could drift
        assert declared[name].kwargs == single[name].kwargs, name
        assert declared[name].choices == single[name].choices, name
    for name, (_, target) in MULTI_CAMERA_TOPICS.items():
        assert declared[name].default_value == target
        assert declared[name].kwargs["description"]


def test_multi_camera_command_line(multi_camera_module, tmp_path):
    node = evaluate(multi_camera_module, {"namespace": "robot1", "bundle": "/data/b"})
    assert node.kwargs["autostart"] is False
    cmd = node_command(node, tmp_path)
    assert cmd[: cmd.index("-r", cmd.index("--params-file"))] == [
        EXECUTABLE,
        "--ros-args",
        "-r", "__node:=skp_keypoints",
        "-r", "__ns:=/robot1",
        "--params-file", str(PARAMS_FILE),
        "--params-file", str(tmp_path / "launch_params_1"),
    ]  # fmt: skip
    assert remappings(cmd) == [
        "front/image:=/front_camera/color/image_raw",
        "front/camera_info:=/front_camera/color/camera_info",
        "front/depth:=/front_camera/aligned_depth_to_color/image_raw",
        "rear/image:=/rear_camera/color/image_raw",
        "rear/camera_info:=/rear_camera/color/camera_info",
        "rear/depth:=/rear_camera/aligned_depth_to_color/image_raw",
    ]
    parameters = generated_parameters(cmd, "/robot1/skp_keypoints")
    assert parameters == {
        "cameras": ["front", "rear"],
        "bundle": "/data/b",
        "autostart": True,
        "use_sim_time": False,
    }
    assert check_value("cameras", parameters["cameras"]) is None


def test_multi_camera_topics_can_be_changed_or_left_unremapped(multi_camera_module, tmp_path):
    node = evaluate(
        multi_camera_module,
        {
            "front_image_topic": "/cam0/image_raw",
            "front_camera_info_topic": "",  # derived from /cam0/image_raw by the node
            "rear_depth_topic": "",
            "use_depth": "true",
        },
    )
    cmd = node_command(node, tmp_path)
    assert remappings(cmd) == [
        "front/image:=/cam0/image_raw",
        "front/depth:=/front_camera/aligned_depth_to_color/image_raw",
        "rear/image:=/rear_camera/color/image_raw",
        "rear/camera_info:=/rear_camera/color/camera_info",
    ]
    assert generated_parameters(cmd, "/skp_keypoints")["use_depth"] is True


def test_params_file_sets_every_parameter_with_valid_values():
    text = PARAMS_FILE.read_text()
    document = yaml.safe_load(text)
    assert list(document) == ["/**/skp_keypoints"]
    values = document["/**/skp_keypoints"]["ros__parameters"]
    # An empty-list default (cameras) cannot be typed in YAML: it may stay a commented example.
    unset = {name for name, spec in SPECS.items() if spec.unset_when_empty} - set(values)
    assert set(values) | unset == set(SPECS), (set(values) | unset) ^ set(SPECS)
    for name in unset:
        assert f"    # {name}: " in text, f"{name} is neither set nor shown in a comment"
    for name, value in values.items():
        assert check_value(name, value) is None, check_value(name, value)
        # The shipped file documents the defaults: the table and the YAML must agree.
        assert value == SPECS[name].default, name


# --------------------------------------------------------------------------- the real process


def node_argv(node_action: Node, tmp_path: Path) -> list[str]:
    """The generated command line with the source tree's module for the installed executable."""
    cmd = node_command(node_action, Path(tempfile.mkdtemp(dir=tmp_path)))
    assert cmd[0] == EXECUTABLE
    return [sys.executable, "-m", "skp_ros.keypoint_node", *cmd[1:]]


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return make_tiny_bundle(tmp_path / "bundle", method_overrides={"num_views": 2})


@contextmanager
def launched(
    argv: list[str], context: Context, tmp_path: Path
) -> Iterator[tuple[RosClient, NodeProcess]]:
    """The node running `argv`, and a client; SIGINT at the end must exit it with code 0."""
    client = RosClient(context)
    node = NodeProcess(argv, tmp_path / "node.log")
    try:
        yield client, node
    finally:
        code = node.stop()
        client.close()
    assert code == 0, node.output()


@pytest.mark.ros
@pytest.mark.slow
def test_node_runs_with_the_launch_command_line(launch_module, rclpy_context, tmp_path, bundle):
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
            "log_level": "info",  # --ros-args --log-level info must parse
        },
    )
    argv = node_argv(node_action, tmp_path)
    assert argv[3:6] == ["--ros-args", "--log-level", "info"]

    with launched(argv, rclpy_context, tmp_path) as (client, node):
        node.wait_for_output("activated", STARTUP_TIMEOUT_S)
        name = "/robot1/skp_keypoints"
        values = client.get_parameters(
            name,
            [
                "diagnostics_period",
                "device",
                "bundle",
                "debug_heatmap",
                "readout",
                "autostart",
                "use_sim_time",
            ],
        )
        assert values == {
            "diagnostics_period": 0.25,  # from the params file
            "device": "cpu",  # the launch override beats the file's "auto"
            "bundle": str(bundle),
            "debug_heatmap": False,
            "readout": "subpixel",
            "autostart": True,
            "use_sim_time": False,
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


@pytest.mark.ros
@pytest.mark.slow
def test_autostart_false_leaves_the_node_to_a_lifecycle_manager(
    launch_module, rclpy_context, tmp_path, bundle
):
    node_action = evaluate(
        launch_module,
        {
            "namespace": "robot2",
            "bundle": str(bundle),
            "device": "cpu",
            "autostart": "false",
            "use_sim_time": "true",
        },
    )
    with launched(node_argv(node_action, tmp_path), rclpy_context, tmp_path) as (client, node):
        name = "/robot2/skp_keypoints"
        # The executable answers services only once it spins, which with autostart true is
        # after configure + activate: an answer of "unconfigured" means it did not start itself.
        assert client.get_state(name) == "unconfigured", node.output()
        assert client.get_parameters(name, ["autostart", "use_sim_time"]) == {
            "autostart": False,
            "use_sim_time": True,
        }
        assert "activated" not in node.output()
        # Driven by a manager (here the test), it configures with the launch's parameters.
        assert client.change_state(name, "configure"), node.output()
        assert client.get_state(name) == "inactive"


@pytest.mark.ros
@pytest.mark.slow
def test_multi_camera_node_serves_both_remapped_cameras(
    multi_camera_module, rclpy_context, tmp_path, bundle
):
    node_action = evaluate(
        multi_camera_module, {"namespace": "robot3", "bundle": str(bundle), "device": "cpu"}
    )
    with launched(node_argv(node_action, tmp_path), rclpy_context, tmp_path) as (client, node):
        node.wait_for_output("activated", STARTUP_TIMEOUT_S)
        name = "/robot3/skp_keypoints"
        assert client.get_parameters(name, ["cameras"]) == {"cameras": ["front", "rear"]}
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        photo = sample_photo("coffee")
        for camera, stamp in (("front", 111_000_000_000), ("rear", 222_000_000_000)):
            pub = client.node.create_publisher(Image, f"/{camera}_camera/color/image_raw", qos)
            clouds: list[PointCloud2] = client.collect(
                PointCloud2, f"{name}/{camera}/keypoints", qos
            )
            client.publish_until(
                pub,
                rgb_to_image_msg(photo, header(stamp, f"{camera}_optical")),
                lambda clouds=clouds, stamp=stamp: any(stamp_ns(c.header) == stamp for c in clouds),
                what=f"keypoints of the {camera} camera",
            )
            cloud = next(c for c in clouds if stamp_ns(c.header) == stamp)
            assert cloud.header.frame_id == f"{camera}_optical"
            assert len(cloud_to_keypoints(cloud)[0]) == 6
