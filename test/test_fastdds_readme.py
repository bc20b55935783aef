"""The README's Fast DDS instructions, followed literally, deliver a camera stream to the node.

Each README line runs in a fresh `bash` whose environment holds nothing that the project's
helpers set (no profile variable, no RMW, no AMENT_PREFIX_PATH): only a user's PATH and HOME,
and the two variables that keep this test run isolated, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
and this run's ROS_DOMAIN_ID. The shell then sets itself up as a user's would (activate the
venv; for the colcon flavour also source the workspace), runs the README line, and starts
either the keypoint node or a camera stand-in. The camera is a small script of this test, not
project code: it publishes 1920x1080 rgb8 frames at 10 Hz with sensor-data QoS, as a camera
driver does, and reads how many of them the node counted in /diagnostics (`frames_received`
counts every arrival; the node processes only the newest frame). The camera cannot publish
from this test process: conftest gave it the project's own profile, and the profile matters
most on the sending side (measured: 50 of 50 frames with it only in the camera's shell, 10 of
50 with it only in the node's), so a camera here would hide a broken README.

ros2cli has no wheel, so the README's `ros2 run skp_ros ...` line runs through a stand-in
`ros2` shell function that resolves `<prefix>/lib/<package>/<executable>` over
AMENT_PREFIX_PATH the way `ros2 run` does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from node_support import STARTUP_TIMEOUT_S, NodeProcess

from skp_ros.tiny_bundle import make_tiny_bundle

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
SECTION = "### Fast DDS profile for image streams"
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
TOPIC = "/camera/image_raw"
NODE_NAME = "/skp_keypoints"
FRAMES, RATE_HZ, WIDTH, HEIGHT = 50, 10.0, 1920, 1080
MIN_FRACTION = 0.95
FAST = {"num_views": 2, "image_size": 128}  # the tiny model, well under a second per frame
# Ceilings, not sleeps: the node imports torch and builds its model on 2 loaded cores first.
WARM_UP_TIMEOUT_S = 2 * STARTUP_TIMEOUT_S
COUNT_TIMEOUT_S = 45.0
# A user's environment: nothing of what skp's helpers (skp_ros.ros_env) would set.
USER_VARIABLES = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR")

ROS2_RUN_STAND_IN = r"""
ros2() {  # `ros2 run PKG EXE ARGS...` as ros2cli resolves it; nothing else of ros2cli
  [ "$1" = run ] || { echo "ros2 stand-in: only 'ros2 run' exists here" >&2; return 2; }
  local pkg=$2 exe=$3 prefix
  shift 3
  local IFS=:
  for prefix in $AMENT_PREFIX_PATH; do
    if [ -e "$prefix/share/ament_index/resource_index/packages/$pkg" ]; then
      exec "$prefix/lib/$pkg/$exe" "$@"
    fi
  done
  echo "ros2 stand-in: package '$pkg' not found" >&2
  return 1
}
"""

CAMERA = r'''
"""Camera stand-in: rgb8 frames at a fixed rate, then the node's frames_received count."""

import ipaddress
import json
import os
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

TOPIC, NODE, FRAMES, RATE, WIDTH, HEIGHT, WARM_UP_S, COUNT_S = sys.argv[1:9]
FRAMES, RATE, WIDTH, HEIGHT = int(FRAMES), float(RATE), int(WIDTH), int(HEIGHT)
WARM_UP_S, COUNT_S = float(WARM_UP_S), float(COUNT_S)


class Camera:
    """Publisher of one fixed frame (new stamps) and listener of the node's diagnostics."""

    def __init__(self):
        self.node = rclpy.create_node("readme_camera")
        self.publisher = self.node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
        self.counts = []  # frames_received of each diagnostics message of the node
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 50)
        pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        self.msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
        self.msg.data = pixels.tobytes()
        self.msg.header.frame_id = "readme_camera"
        self.failures = 0

    def on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith(NODE + ":"):
                values = {kv.key: kv.value for kv in status.values}
                self.counts.append(int(values["frames_received"]))

    def spin_until(self, condition, timeout):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return True

    def publish(self):
        self.msg.header.stamp = self.node.get_clock().now().to_msg()
        try:
            self.publisher.publish(self.msg)
        except Exception:  # RCLError under load: count it, as a camera driver would drop it
            self.failures += 1

    def warm_up(self):
        """A frame every 0.5 s until the node has counted one (both sides matched)."""
        deadline = time.monotonic() + WARM_UP_S
        while time.monotonic() < deadline:
            if self.publisher.get_subscription_count() > 0:
                self.publish()
            if self.spin_until(lambda: self.counts and self.counts[-1] > 0, 0.5):
                return True
        return False

    def settled_count(self):
        """frames_received once two diagnostics messages in a row agree (nothing in flight)."""
        seen = len(self.counts)
        while self.spin_until(lambda: len(self.counts) >= seen + 2, COUNT_S):
            if self.counts[-1] == self.counts[-2]:
                return self.counts[-1]
            seen = len(self.counts)
        return None

    def stream(self):
        """FRAMES frames paced at RATE Hz (spinning for diagnostics in between)."""
        next_time = time.monotonic()
        for _ in range(FRAMES):
            self.publish()
            next_time += 1.0 / RATE
            self.spin_until(lambda: time.monotonic() >= next_time, 1.0 / RATE + 1.0)

    def final_count(self, baseline):
        """The node's count after the stream: all frames, or whatever arrived by the timeout."""
        self.spin_until(lambda: self.counts and self.counts[-1] >= baseline + FRAMES, COUNT_S)
        self.settled_count()
        return self.counts[-1] if self.counts else None


def main():
    rclpy.init()
    camera = Camera()
    result = {name: os.environ.get(name) for name in sys.argv[9:]}
    result.update(published=FRAMES, baseline=None, final=None, error=None)
    if not camera.warm_up():
        result["error"] = f"no frame reached {NODE} within {WARM_UP_S:.0f} s"
    else:
        result["baseline"] = camera.settled_count()
        camera.stream()
        result["final"] = camera.final_count(result["baseline"] or 0)
    result["publish_failures"] = camera.failures
    print("RESULT " + json.dumps(result), flush=True)
    camera.node.destroy_node()
    rclpy.shutdown()


main()
'''


def readme_fastdds_lines() -> list[str]:
    """The shell lines of the README's Fast DDS section (its first bash block)."""
    text = README.read_text()
    assert SECTION in text, f"the README has no {SECTION!r} section"
    section = text[text.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "the README's Fast DDS section has no commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def readme_line(flavour: str) -> str:
    """The README line for a pip/venv install, or for a colcon workspace (`ros2 run`)."""
    lines = readme_fastdds_lines()
    assert len(lines) == 2, lines
    colcon = [line for line in lines if "ros2 run" in line]
    venv = [line for line in lines if "ros2 run" not in line]
    assert len(colcon) == len(venv) == 1, lines
    return (colcon if flavour == "colcon" else venv)[0]


def colcon_install_base() -> Path | None:
    """The colcon install space holding skp_ros (from AMENT_PREFIX_PATH), None without one."""
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        marker = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages"
        if (marker / "skp_ros").is_file() and (Path(prefix).parent / "setup.bash").is_file():
            return Path(prefix).parent
    return None


def user_env() -> dict[str, str]:
    """A user's environment plus this run's isolation (loopback discovery, own domain)."""
    env = {name: os.environ[name] for name in USER_VARIABLES if name in os.environ}
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = os.environ["ROS_DOMAIN_ID"]  # this test session's private domain
    return env


def shell_setup(flavour: str) -> str:
    """What a user's shell runs before the README line: activate the venv (and the workspace)."""
    lines = ["set -e", f". {Path(sys.prefix) / 'bin' / 'activate'}"]
    if flavour == "colcon":
        base = colcon_install_base()
        assert base is not None
        lines += [f". {base / 'setup.bash'}", ROS2_RUN_STAND_IN]
    return "\n".join(lines)


def node_command(flavour: str, bundle: Path) -> str:
    """The node as the README starts it, with only bundle, device and image_topic set."""
    # the ros2 stand-in execs the node itself (exec cannot run a shell function)
    exe = "ros2 run skp_ros keypoint_node" if flavour == "colcon" else "exec keypoint_node"
    params = f"-p bundle:={bundle} -p device:=cpu -p image_topic:={TOPIC}"
    return f"{exe} --ros-args {params}"


def bash_script(flavour: str, command: str) -> str:
    """Shell set-up, the README line, the profile variables it set, then `command`."""
    show = " ".join(f'"{name}=${{{name}:-}}"' for name in PROFILE_VARIABLES)
    return "\n".join(
        [shell_setup(flavour), readme_line(flavour), f"printf '%s\\n' {show}", command]
    )


def run_camera(flavour: str, script: Path) -> dict:
    """Run the camera stand-in after the README line; its RESULT line as a dict."""
    args = [TOPIC, NODE_NAME, FRAMES, RATE_HZ, WIDTH, HEIGHT, WARM_UP_TIMEOUT_S, COUNT_TIMEOUT_S]
    command = " ".join(["exec python", str(script), *map(str, args), *PROFILE_VARIABLES])
    done = subprocess.run(
        ["bash", "-c", bash_script(flavour, command)],
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=WARM_UP_TIMEOUT_S + 6 * COUNT_TIMEOUT_S + FRAMES / RATE_HZ + 60,
    )
    found = re.search(r"^RESULT (.*)$", done.stdout, flags=re.M)
    assert found, f"camera exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return json.loads(found.group(1))


def expected_profile(flavour: str) -> Path:
    """Where the README's line must point for this flavour of install."""
    if flavour == "colcon":
        base = colcon_install_base()
        assert base is not None
        return base / "skp_ros" / "share" / "skp_ros" / "config" / "fastdds_profile.xml"
    return REPO_ROOT / "config" / "fastdds_profile.xml"  # .venv holds an editable install


def udp_addresses(pid: int) -> set[str]:
    """Local IPv4 addresses that the UDP sockets of process `pid` are bound to."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    addresses = set()
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            packed = int(fields[1].split(":")[0], 16).to_bytes(4, "little")
            addresses.add(str(ipaddress.IPv4Address(packed)))
    return addresses


def flavours() -> list:
    """The venv flavour always; the colcon one where a workspace is built and sourced."""
    skip = pytest.mark.skipif(
        colcon_install_base() is None, reason="no colcon install space of skp_ros is sourced"
    )
    return ["venv", pytest.param("colcon", marks=skip)]


def test_readme_gives_one_line_per_install_flavour():
    assert "skp-fastdds-profile --export" in readme_line("venv")
    assert readme_line("colcon").startswith('eval "$(ros2 run skp_ros skp-fastdds-profile')


@pytest.mark.parametrize("flavour", flavours())
def test_readme_profile_delivers_full_hd_stream_to_node(flavour: str, tmp_path: Path):
    bundle = make_tiny_bundle(tmp_path / "bundle", method_overrides=FAST)
    camera = tmp_path / "camera.py"
    camera.write_text(CAMERA)
    script = bash_script(flavour, node_command(flavour, bundle))
    node = NodeProcess(["bash", "-c", script], tmp_path / "node.log", env=user_env())
    try:
        result = run_camera(flavour, camera)
        # bash exec'd the node: the profile's interface whitelist binds its unicast sockets to
        # loopback (without the profile every socket is bound to 0.0.0.0)
        addresses = udp_addresses(node.proc.pid) if node.alive else set()
    finally:
        node.stop()
    log = node.output()[-4000:]
    profile = str(expected_profile(flavour))
    assert all(result[name] == profile for name in PROFILE_VARIABLES), (result, log)
    assert f"FASTRTPS_DEFAULT_PROFILES_FILE={profile}" in node.output(), log
    assert "127.0.0.1" in addresses, (addresses, log)
    assert result["error"] is None and result["baseline"] is not None, (result, log)
    received = result["final"] - result["baseline"]
    assert received <= FRAMES, result
    assert received >= MIN_FRACTION * FRAMES, (
        f"{received} of {FRAMES} {WIDTH}x{HEIGHT} frames reached the node ({result})\n{log}"
    )
