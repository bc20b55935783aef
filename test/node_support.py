"""Drive a real keypoint node process from a test: its output, services, topics and diagnostics.

The node runs as a separate process in the test's private, loopback-only ROS domain
(`ros_support.child_env`); its stdout/stderr go to a log file that the test can read while the
process runs (to wait for a warning) and after it exits (to show it on failure). Everything
waits for a condition with a timeout, never for a fixed time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile
from std_msgs.msg import Header

from ros_support import MATCH_TIMEOUT_S, child_env, wait_until

# Generous: a node process imports torch + diffusers and builds the model on 2 CPU cores.
STARTUP_TIMEOUT_S = 90.0

TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "cleanup": Transition.TRANSITION_CLEANUP,
}


class NodeProcess:
    """A node process whose combined output is appended to a log file."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self._log = open(log_path, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            list(argv),
            env=env or child_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = MATCH_TIMEOUT_S) -> None:
        wait_until(
            lambda: text in self.output() or not self.alive,
            timeout=timeout,
            what=f"{text!r} in the node output",
        )
        assert text in self.output(), f"node exited without printing {text!r}:\n{self.output()}"

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT (as Ctrl-C and ros2 launch do), SIGKILL after `timeout`; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def keypoint_node_argv(ros_args: Sequence[str]) -> list[str]:
    """Command line of the keypoint node run from the source tree."""
    return [sys.executable, "-m", "skp_ros.keypoint_node", "--ros-args", *ros_args]


@contextmanager
def node_process(
    argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[NodeProcess]:
    process = NodeProcess(argv, log_path, env)
    try:
        yield process
    finally:
        process.stop()


def param_args(**values: Any) -> list[str]:
    """`-p name:=value` pairs (bools lower-case, as YAML wants)."""
    args: list[str] = []
    for name, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{name}:={text}"]
    return args


def header(stamp_ns: int, frame_id: str) -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return h


def stamp_ns(h: Header) -> int:
    return h.stamp.sec * 1_000_000_000 + h.stamp.nanosec


def diagnostic_values(msg: DiagnosticArray, node_name: str) -> dict[str, str] | None:
    """Key/values of our node's status in one /diagnostics message (None if absent)."""
    for status in msg.status:
        if status.name.startswith(f"{node_name}:"):
            values = {kv.key: kv.value for kv in status.values}
            values["_level"] = str(int.from_bytes(status.level, "little"))
            values["_message"] = status.message
            return values
    return None


class RosClient:
    """The test's own node: subscriptions, publishers, service calls, all spun on demand."""

    def __init__(self, context: Context, name: str = "skp_test_client") -> None:
        self.node = rclpy.create_node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self.diagnostics.append, QoSProfile(depth=50)
        )

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()

    def spin_until(
        self, condition: Callable[[], bool], timeout: float = MATCH_TIMEOUT_S, what: str = ""
    ) -> None:
        wait_until(
            condition,
            timeout=timeout,
            spin=lambda t: self.executor.spin_once(timeout_sec=t),
            what=what or "condition",
        )

    def collect(self, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> list[Any]:
        """Subscribe and return the list that received messages are appended to."""
        received: list[Any] = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def publish_until(
        self,
        publisher: Any,
        msg: Any,
        condition: Callable[[], bool],
        what: str,
        timeout: float = 60.0,
        period: float = 3.0,
    ) -> None:
        """Publish `msg` and wait for `condition`; re-publish every `period` s (best-effort
        delivery, and a subscription that matched us before we matched it, can lose one)."""
        deadline = time.monotonic() + timeout
        while True:
            publisher.publish(msg)
            try:
                self.spin_until(condition, timeout=period, what=what)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"timed out after {timeout:.0f} s waiting for {what}"
                    ) from None

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 60.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            self.spin_until(client.service_is_ready, STARTUP_TIMEOUT_S, f"service {name}")
            future = client.call_async(request)
            self.spin_until(future.done, timeout, f"response of {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node: str, **values: Any) -> list[SetParametersResult]:
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        )
        return list(self.call(SetParameters, f"{node}/set_parameters", request).results)

    def get_parameters(self, node: str, names: Sequence[str]) -> dict[str, Any]:
        response = self.call(
            GetParameters, f"{node}/get_parameters", GetParameters.Request(names=list(names))
        )
        return {
            n: parameter_value_to_python(v) for n, v in zip(names, response.values, strict=True)
        }

    def change_state(self, node: str, transition: str, timeout: float = 120.0) -> bool:
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[transition]
        return bool(self.call(ChangeState, f"{node}/change_state", request, timeout).success)

    def get_state(self, node: str) -> str:
        return self.call(GetState, f"{node}/get_state", GetState.Request()).current_state.label

    def wait_diagnostics(
        self,
        node_name: str,
        condition: Callable[[dict[str, str]], bool] = lambda values: True,
        timeout: float = MATCH_TIMEOUT_S,
    ) -> dict[str, str]:
        """The first NEW diagnostics status of `node_name` satisfying `condition`."""
        start = len(self.diagnostics)
        found: list[dict[str, str]] = []

        def check() -> bool:
            for msg in self.diagnostics[start:]:
                values = diagnostic_values(msg, node_name)
                if values is not None and condition(values):
                    found.append(values)
                    return True
            return False

        try:
            self.spin_until(check, timeout, f"diagnostics of {node_name}")
        except TimeoutError as exc:
            seen = sorted({s.name for m in self.diagnostics[start:] for s in m.status})
            raise TimeoutError(
                f"{exc}; statuses seen meanwhile ({len(self.diagnostics) - start} messages): {seen}"
            ) from None
        return found[0]


def in_image(uv: np.ndarray, width: int, height: int) -> bool:
    """Pixel coordinates (centre of the top-left pixel at 0) inside the image."""
    u, v = uv[:, 0], uv[:, 1]
    return bool(((u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)).all())
