"""Environment for ROS 2 processes that must stay on this machine (tests, demos, benchmarks).

Fast DDS multicasts discovery out of every network card by default. Every process started by
our tests, demos and benchmarks gets the variables below *before* `rclpy.init`, so discovery is
limited to loopback, each run has its own domain, and large images fit the shared-memory
transport. A real robot deployment does not use this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# Domain ids 0..232 are valid for Fast DDS on Linux (233 fails); 0 is everyone's default.
_DOMAIN_MIN, _DOMAIN_MAX = 1, 232


def fastdds_profile_path() -> Path:
    """The shipped Fast DDS profile: from the install space if installed, else the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory("skp_ros")) / "config" / "fastdds_profile.xml"
        if candidate.is_file():
            return candidate
    except Exception:  # not installed through colcon: use the source checkout
        pass
    return Path(__file__).resolve().parent.parent / "config" / "fastdds_profile.xml"


def domain_id_for(key: int) -> int:
    """Map any integer (e.g. a pid) into the usable, non-default domain id range."""
    return _DOMAIN_MIN + key % (_DOMAIN_MAX - _DOMAIN_MIN + 1)


def local_ros_env(
    domain_id: int | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return a copy of `base` (default os.environ) configured for loopback-only ROS 2."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    # ROS_LOCALHOST_ONLY is deprecated; when set it overrides the discovery range in Jazzy.
    env.pop("ROS_LOCALHOST_ONLY", None)
    env["ROS_DOMAIN_ID"] = str(domain_id_for(os.getpid()) if domain_id is None else domain_id)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(fastdds_profile_path())
    env["FASTRTPS_DEFAULT_PROFILES_FILE"] = env["FASTDDS_DEFAULT_PROFILES_FILE"]
    # ament_index lookups must see the venv's share/ (pip wheels) besides any install space.
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes:
        prefixes.append(sys.prefix)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(prefixes)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def apply_local_ros_env(domain_id: int | None = None) -> dict[str, str]:
    """Configure this process (call before `rclpy.init`) and return the variables set."""
    env = local_ros_env(domain_id)
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    os.environ.update(changed)
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    return changed
