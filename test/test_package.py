"""The package installs the way ROS 2 tools expect: ament index, share files, executables.

package.xml's dependencies are checked against the code: every top-level module that the
shipped code imports (skp_core, skp_ros, offline_tools and the installed launch file, lazy
imports inside functions included) must be declared as `<exec_depend>`/`<depend>`, every module
the tests import as one of those or `<test_depend>`, and nothing may be declared that no code
imports. Modules map to rosdep keys through :data:`ROSDEP_KEYS`; a module in no table fails.
Only `import` statements are seen: `skp_ros.bag_io.message_class` imports whatever message
package a bag names, which is the user's to install.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from skp_ros.fastdds_profile import PROFILE_NAME

REPO_ROOT = Path(__file__).resolve().parent.parent
OWN_PACKAGES = {"skp_core", "skp_ros", "offline_tools"}
RUN_TIME_SOURCES = ("skp_core", "skp_ros", "offline_tools", "launch")
TEST_SOURCES = ("test",)

# Module -> rosdep key (ROS packages are their own key; Python ones from rosdistro's python.yaml).
ROSDEP_KEYS = {
    "ament_flake8": "ament_flake8",
    "ament_index_python": "ament_index_python",
    "ament_pep257": "ament_pep257",
    "builtin_interfaces": "builtin_interfaces",
    "diagnostic_msgs": "diagnostic_msgs",
    "geometry_msgs": "geometry_msgs",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "lifecycle_msgs": "lifecycle_msgs",
    "rcl_interfaces": "rcl_interfaces",
    "rclpy": "rclpy",
    "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs",
    "std_srvs": "std_srvs",
    "visualization_msgs": "visualization_msgs",
    "PIL": "python3-pil",
    "cv2": "python3-opencv",
    "h5py": "python3-h5py",
    "matplotlib": "python3-matplotlib",
    "numpy": "python3-numpy",
    "pandas": "python3-pandas",
    "pytest": "python3-pytest",
    "ruamel": "python3-ruamel.yaml",
    "scipy": "python3-scipy",
    "skimage": "python3-skimage",
    "sklearn": "python3-sklearn",
    "tqdm": "python3-tqdm",
    "yaml": "python3-yaml",
}
# Module -> requirements.txt name. Pinned with pip, never through rosdep: the ML stack needs
# exact versions (rosdep's python3-torch is the distribution's build of another release, and
# diffusers/safetensors have no key). package.xml's comment names them for the reader.
PIP_ONLY = {
    "diffusers": "diffusers",
    "huggingface_hub": "huggingface_hub",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "rosbags": "rosbags",
    "safetensors": "safetensors",
    "tensorboard": "tensorboard",  # the tests read skp-train's event files with it
    "torch": "torch",
}
# Imported only when a user asks for them, and working without them, so a dependency on them
# would install them for everyone: declared nowhere.
OPTIONAL = {
    "cv_bridge": "skp_ros.image_conversion uses it only if importable and it passes a self-test",
    "wandb": "only for skp-train --log-to wandb, which says to install it when missing",
}


def _top_level_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in one file (function-level imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def imported_modules(folders: tuple[str, ...]) -> dict[str, list[str]]:
    """Third-party top-level module -> the files importing it, over every .py under `folders`."""
    local = OWN_PACKAGES | {p.stem for p in (REPO_ROOT / "test").glob("*.py")}
    found: dict[str, list[str]] = {}
    for folder in folders:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for name in _top_level_imports(path) - local - set(sys.stdlib_module_names):
                found.setdefault(name, []).append(str(path.relative_to(REPO_ROOT)))
    return found


def required_keys(folders: tuple[str, ...]) -> dict[str, list[str]]:
    """rosdep key -> importing files, for the code in `folders` (pip-only, optional left out)."""
    keys: dict[str, list[str]] = {}
    for module, files in imported_modules(folders).items():
        if module in ROSDEP_KEYS:
            keys.setdefault(ROSDEP_KEYS[module], []).extend(files)
    return keys


def declared(*tags: str) -> set[str]:
    """The dependency keys package.xml declares under any of `tags`."""
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    return {(e.text or "").strip() for tag in tags for e in root.findall(tag)}


def test_package_xml_is_an_ament_python_package():
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "skp_ros"
    assert root.find("export/build_type").text == "ament_python"


@pytest.mark.parametrize("folders", [RUN_TIME_SOURCES, TEST_SOURCES], ids=["run-time", "test"])
def test_every_imported_module_has_a_known_dependency(folders: tuple[str, ...]):
    known = ROSDEP_KEYS.keys() | PIP_ONLY.keys() | OPTIONAL.keys()
    unknown = {m: files for m, files in imported_modules(folders).items() if m not in known}
    assert unknown == {}, (
        "imported modules without a dependency: add each to ROSDEP_KEYS (its rosdep key), "
        f"PIP_ONLY or OPTIONAL in {Path(__file__).name}, then declare it in package.xml: {unknown}"
    )


def test_run_time_dependencies_are_exactly_the_imported_ones():
    needed = required_keys(RUN_TIME_SOURCES)
    have = declared("exec_depend", "depend")
    missing = {key: files for key, files in needed.items() if key not in have}
    assert missing == {}, f"imported at run time but not an <exec_depend> in package.xml: {missing}"
    assert have - needed.keys() == set(), "declared in package.xml but imported by no shipped code"


def test_test_dependencies_are_exactly_the_test_only_imports():
    run_time = declared("exec_depend", "depend")
    needed = {k: f for k, f in required_keys(TEST_SOURCES).items() if k not in run_time}
    have = declared("test_depend")
    missing = {key: files for key, files in needed.items() if key not in have}
    assert missing == {}, f"imported by tests but not a <test_depend> in package.xml: {missing}"
    assert have - needed.keys() == set(), "<test_depend> that no test imports (or a run-time one)"


def test_pip_only_modules_are_pinned_and_documented():
    used = imported_modules(RUN_TIME_SOURCES).keys() | imported_modules(TEST_SOURCES).keys()
    pinned = set(re.findall(r"^([\w.-]+)==", (REPO_ROOT / "requirements.txt").read_text(), re.M))
    comments = " ".join(re.findall(r"<!--(.*?)-->", (REPO_ROOT / "package.xml").read_text(), re.S))
    for module in sorted(used & PIP_ONLY.keys()):
        assert PIP_ONLY[module] in pinned, f"{PIP_ONLY[module]} is not pinned in requirements.txt"
        assert PIP_ONLY[module] in comments, f"package.xml's comment does not name {module}"


def _installed() -> bool:
    return any(
        (Path(p) / "share" / "ament_index" / "resource_index" / "packages" / "skp_ros").exists()
        for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
        if p
    )


def test_skp_core_imports_no_ros():
    ros = {"rclpy", "sensor_msgs", "std_msgs", "skp_ros", "rosbags"}
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for path in sorted((REPO_ROOT / "skp_core").rglob("*.py"))
        for name in sorted(_top_level_imports(path))
        if name in ros or name.endswith("_msgs")
    ]
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
    assert (prefix / "lib" / "skp_ros" / "skp-fastdds-profile").is_file()


def _source_copy(target: Path) -> Path:
    """What setup.py packages, copied to `target` (building in the checkout would litter it)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    target.mkdir()
    for name in ("setup.py", "setup.cfg", "package.xml"):
        shutil.copy2(REPO_ROOT / name, target / name)
    for name in ("resource", "launch", "config", *sorted(OWN_PACKAGES)):
        shutil.copytree(REPO_ROOT / name, target / name, ignore=ignore)
    return target


@pytest.mark.slow
def test_pip_install_ships_the_fastdds_profile_where_the_command_looks(tmp_path: Path):
    """A regular (non-editable) pip install: the profile is data in <prefix>/share/skp_ros."""
    source = _source_copy(tmp_path / "src")
    prefix = tmp_path / "prefix"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # --ignore-installed: otherwise pip first uninstalls the venv's own (editable) skp_ros
    flags = ["--no-deps", "--no-index", "--no-build-isolation", "--ignore-installed"]
    flags += ["--no-warn-script-location", "--prefix", str(prefix)]
    done = subprocess.run([*pip, *flags, str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (module,) = prefix.rglob("skp_ros/fastdds_profile.py")
    env = {**os.environ, "PYTHONPATH": str(module.parent.parent)}  # before the editable install
    done = subprocess.run(
        [str(prefix / "bin" / "skp-fastdds-profile")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    installed = prefix.resolve() / "share" / "skp_ros" / "config" / PROFILE_NAME
    assert done.stdout.strip() == str(installed)
    assert installed.read_bytes() == (REPO_ROOT / "config" / PROFILE_NAME).read_bytes()
