"""Environment for ROS 2 processes that must stay on this machine (tests, demos, benchmarks).

Fast DDS multicasts discovery out of every network card by default. Every process started by
our tests, demos and benchmarks gets the variables below *before* `rclpy.init`, so discovery is
limited to loopback, each run has its own domain, and large images fit the shared-memory
transport (the same profile a user sets with `skp-fastdds-profile`, see
:mod:`skp_ros.fastdds_profile`). A real robot deployment does not use this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from skp_ros.fastdds_profile import PROFILE_VARIABLES, fastdds_profile_path

# Domain ids 0..232 are valid for Fast DDS on Linux (233 fails); 0 is everyone's default.
_DOMAIN_MIN, _DOMAIN_MAX = 1, 232

__all__ = ["apply_local_ros_env", "domain_id_for", "fastdds_profile_path", "local_ros_env"]


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
    profile = str(fastdds_profile_path())
    for name in PROFILE_VARIABLES:  # Fast DDS 2.x (Jazzy) and 3.x (Kilted) read different ones
        env[name] = profile
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
