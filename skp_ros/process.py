"""Process lifetime shared by our executables and by whoever starts them (replay, tests).

A ROS executable must exit cleanly on Ctrl-C and on `ros2 launch` shutdown (which may surface
as ExternalShutdownException instead of KeyboardInterrupt); a parent stopping it sends SIGINT
first so the child can take that clean path, and kills it only if it does not.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

# The folder holding skp_core/skp_ros/offline_tools (a source checkout or site-packages).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


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
