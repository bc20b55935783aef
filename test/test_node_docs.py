"""The README's node section says what the code does: parameters, topics and the cloud layout.

Users configure the node from the README; a parameter renamed in the code, a topic added
without a row, or a cloud field moved without the text following would send them wrong.
"""

from __future__ import annotations

import re

from ros_support import REPO_ROOT
from skp_ros.camera_stream import DATA_OUTPUTS
from skp_ros.keypoint_msgs import KEYPOINT_FIELDS, KEYPOINT_POINT_STEP
from skp_ros.parameters import PARAMETERS

README = (REPO_ROOT / "README.md").read_text()
SECTION = README[README.index("## The ROS 2 node") : README.index("## Bag replay")]


def test_every_parameter_is_named_and_no_stale_one() -> None:
    listed = SECTION[SECTION.index("Parameters (all declared") :]
    listed = listed[: listed.index("\n\n")]
    names = set(re.findall(r"`([a-z_]+)`", listed))
    declared = {spec.name for spec in PARAMETERS}
    assert declared <= names, declared - names
    # Words in back-quotes that look like parameters but are none (removed or misspelt).
    values = {"auto", "cpu", "cuda", "mps", "argmax", "subpixel", "weighted_avg", "bundle"}
    values |= {"raw", "compressed", "none", "one_euro", "dtype"}
    assert names - declared - values == set(), names - declared - values


def test_topic_table_lists_every_input_output_and_service() -> None:
    rows = re.findall(r"^\| `([^`]+)`", SECTION, flags=re.MULTILINE)
    expected = {"image", "camera_info", "depth", "roi", "~/keypoint_info", "/diagnostics"}
    expected |= {f"~/{name}" for name in DATA_OUTPUTS} | {"~/enable"}
    assert set(rows) == expected, set(rows) ^ expected


def test_cloud_layout_paragraph_matches_the_fields() -> None:
    text = SECTION[SECTION.index("**The cloud.**") :]
    text = " ".join(text[: text.index("\n\n")].split())
    assert f"`point_step` {KEYPOINT_POINT_STEP}" in text
    order = [
        name
        for name in re.findall(r"`([a-z]+)`", text)
        if name in {f.name for f in KEYPOINT_FIELDS}
    ]
    assert order[: len(KEYPOINT_FIELDS)] == [f.name for f in KEYPOINT_FIELDS]
    # "(float32, offsets 0/4/8)", "(float32, 12/16: ...)", "(uint32, 20)", ...
    groups = re.findall(r"\((float32|uint32), (?:offsets )?([\d/]+)", text)
    documented = [(kind, int(o)) for kind, run in groups for o in run.split("/")]
    kinds = {7: "float32", 6: "uint32"}
    assert documented == [(kinds[f.datatype], f.offset) for f in KEYPOINT_FIELDS]
