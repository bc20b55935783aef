"""The package installs the way ROS 2 tools expect: ament index, share files, executables."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _installed() -> bool:
    return any(
        (Path(p) / "share" / "ament_index" / "resource_index" / "packages" / "skp_ros").exists()
        for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
        if p
    )


def test_package_xml_declares_ament_python_and_runtime_deps():
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "skp_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    for dep in (
        "rclpy",
        "sensor_msgs",
        "std_msgs",
        "geometry_msgs",
        "visualization_msgs",
        "diagnostic_msgs",
    ):
        assert dep in deps


def test_skp_core_imports_no_ros():
    import ast

    offenders = []
    for path in (REPO_ROOT / "skp_core").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in {"rclpy", "sensor_msgs", "std_msgs", "skp_ros", "rosbags"} or (
                    top.endswith("_msgs")
                ):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}: {name}")
    assert offenders == []


@pytest.mark.skipif(
    not _installed(), reason="skp_ros is not in AMENT_PREFIX_PATH (no colcon build)"
)
def test_share_files_found_through_ament_index():
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    share = Path(get_package_share_directory("skp_ros"))
    assert (share / "package.xml").is_file()
    assert (share / "config" / "fastdds_profile.xml").is_file()
    prefix = Path(get_package_prefix("skp_ros"))
    # setup.cfg puts console scripts where `ros2 run skp_ros <exe>` looks for them.
    assert (prefix / "lib" / "skp_ros").is_dir()
