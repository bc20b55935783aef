"""ROS 2 isolation for tests: loopback-only discovery, a private domain, no fixed sleeps.

Every test that touches rclpy or starts a ROS process goes through this module, so that no
DDS traffic leaves loopback, parallel runs do not see each other, and leftovers of killed
processes in /dev/shm are removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from skp_ros.process import child_env as process_env
from skp_ros.process import stop_child
from skp_ros.ros_env import apply_local_ros_env, local_ros_env

REPO_ROOT = Path(__file__).resolve().parent.parent
SHM_DIR = Path("/dev/shm")
SHM_PREFIXES = ("fastrtps_", "fastdds_", "sem.fastrtps_", "sem.fastdds_")

# Discovery usually matches in well under a second but sometimes takes ~3 s; a child process
# also has to import torch/OpenCV first, which on a loaded 2-core machine can take a while.
# This is a ceiling, not a sleep: waits end as soon as their condition holds.
MATCH_TIMEOUT_S = 60.0


def shm_entries() -> set[str]:
    """Fast DDS shared-memory files currently present."""
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(SHM_PREFIXES)}


def mapped_shm_paths() -> set[str]:
    """Every /dev/shm file some live process has mapped (other test sessions' DDS segments)."""
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process ended, or is not ours to read
            continue
        mapped.update(
            line.split(None, 5)[5].strip()
            for line in text.splitlines()
            if "/dev/shm/" in line and len(line.split(None, 5)) == 6
        )
    return mapped


def remove_shm_entries(names: set[str]) -> None:
    """Remove leftovers of killed processes, never a segment a live process still maps.

    Another session's DDS participants may have created files while we ran; deleting one of
    those would cut them off from every participant started later.
    """
    in_use = mapped_shm_paths()
    for name in names:
        path = SHM_DIR / name
        base = name.removeprefix("sem.").removesuffix("_el").removesuffix("_mutex")
        if str(path) in in_use or str(SHM_DIR / base) in in_use:
            continue
        if name.startswith(("fastrtps_port", "sem.fastrtps_port")):
            continue  # port files are shared by every participant on the machine
        try:
            path.unlink()
        except OSError:
            pass


def configure_process() -> dict[str, str]:
    """Apply the loopback-only environment to the test process itself (before rclpy.init)."""
    return apply_local_ros_env()


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a ROS child process: same domain as this test process."""
    env = process_env(local_ros_env(int(os.environ["ROS_DOMAIN_ID"])))
    env.update(extra)
    return env


def wait_until(
    condition: Callable[[], bool],
    timeout: float = MATCH_TIMEOUT_S,
    spin: Callable[[float], None] | None = None,
    what: str = "condition",
) -> None:
    """Poll `condition`, spinning the given executor/node between polls, until true or timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        if spin is not None:
            spin(0.05)
        else:
            time.sleep(0.02)


@contextmanager
def ros_process(
    args: Sequence[str], env: dict[str, str] | None = None, name: str = "child"
) -> Iterator[subprocess.Popen[str]]:
    """Run a Python ROS process for the duration of a `with` block, then stop it cleanly."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """SIGINT, then SIGKILL if needed; return whatever the process printed."""
    stop_child(proc, timeout)
    out = proc.stdout.read() if proc.stdout else ""
    return out or ""
