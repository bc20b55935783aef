"""Process lifetime shared by our executables and by whoever starts them (replay, tests).

A ROS executable must exit cleanly on Ctrl-C and on `ros2 launch` shutdown (which may surface
as ExternalShutdownException instead of KeyboardInterrupt); a parent stopping it sends SIGINT
first so the child can take that clean path, and kills it only if it does not. The parents
(skp-replay, skp-node-bench) also build the child's command line, wait on conditions while
watching it, and quote the end of its log when it fails: one implementation each, here.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

# The folder holding skp_core/skp_ros/offline_tools (a source checkout or site-packages).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
KEYPOINT_NODE_CMD = ("python", "-m", "skp_ros.keypoint_node")
POLL_S = 0.02  # how often waits re-check their condition


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) with which `python -m skp_ros...` imports this skp.

    Children started from a source checkout would otherwise not find the packages; output is
    unbuffered so a child's log is complete when it is read.
    """
    env = dict(os.environ if base is None else base)
    paths = [str(PACKAGE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wants_help(argv: Sequence[str]) -> bool:
    """True when -h/--help comes before --ros-args (argv[0] is the program)."""
    ours = list(argv[1:])
    if "--ros-args" in ours:
        ours = ours[: ours.index("--ros-args")]
    return "-h" in ours or "--help" in ours


def node_usage(program: str, doc: str | None, parameters: Iterable[tuple[str, object, str]]) -> str:
    """--help of a ROS node executable: what it is, how to set parameters, each parameter."""
    summary = (doc or "").strip().splitlines()[0] if doc else program
    lines = [
        f"usage: {program} [--ros-args -p NAME:=VALUE ... -r FROM:=TO ... --params-file FILE]",
        "",
        summary,
        "",
        "parameters (default):",
    ]
    for name, default, description in parameters:
        shown = str(default).lower() if isinstance(default, bool) else repr(default)
        lines.append(f"  {name} ({shown}): {description}")
    return "\n".join(lines)


def spin_node(make_node: Callable[[], Node], args: Sequence[str] | None) -> int:
    """rclpy.init, build the node, spin until shutdown, clean up; exit code 0."""
    rclpy.init(args=list(args) if args is not None else None)
    node = None
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def start_child(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own session, stdout and stderr to `log_path` (env: child_env()).

    Its own session: a Ctrl-C in the terminal reaches only the parent, which then stops the
    child itself (stop_child), so the child's log is complete and its exit code known.
    """
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(command),
            env=child_env() if env is None else dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_child(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGINT (the child's clean shutdown path), then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def node_command(
    image_topic: str,
    ros_args: Sequence[str] = (),
    *,
    command: str | Sequence[str] | None = None,
    compressed: bool = False,
) -> list[str]:
    """A child node's command line: `command`, then ROS args remapping `image` to `image_topic`.

    `command` defaults to the keypoint node and may be a shell-quoted string; a leading
    ``python``/``python3`` becomes this interpreter, so the child uses the same venv. With
    `compressed`, the node subscribes to `image_topic` through image_transport's compressed
    transport (`image` is remapped to the base name). `ros_args` (``-p NAME:=VALUE``, ``-r``
    remaps) come last. Raises ValueError for an empty command.
    """
    if command is None:
        argv = list(KEYPOINT_NODE_CMD)
    elif isinstance(command, str):
        argv = shlex.split(command)
    else:
        argv = list(command)
    if not argv:
        raise ValueError("empty node command")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    base = image_topic.removesuffix("/compressed") if compressed else image_topic
    remaps = ["--ros-args", "-r", f"image:={base}"]
    if compressed:
        remaps += ["-p", "input_transport:=compressed"]
    return [*argv, *remaps, *ros_args]


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    child: subprocess.Popen[bytes] | None = None,
    poll: float = POLL_S,
) -> bool:
    """Poll `condition` until true (True), the timeout (False) or the child's death (False).

    Whatever `condition` raises propagates, so a condition may check its own failure cases.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or (child is not None and child.poll() is not None):
            return False
        time.sleep(poll)
    return True


def log_tail(path: Path | None, lines: int = 30) -> str:
    """The last `lines` lines of a child's log; empty when there is no readable log."""
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
