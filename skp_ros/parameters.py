"""Parameters of the keypoint node: one table with defaults, descriptions and validation.

Keeping every parameter in one table means the declaration (with its description, shown by
``ros2 param describe``), the validation of a runtime change, the check at configure time and
the shipped ``config/keypoints.yaml`` can never disagree; a test compares the YAML to this table.

Two kinds of parameter:

* **runtime** ones (thresholds, smoothing, debug drawing, diagnostics period, lazy) may change at
  any time and take effect on the next frame;
* all others decide what is loaded or subscribed (model, device, topics, QoS) and are read on
  ``configure``: while the node is configured, changes to them are rejected with a reason that
  says to ``cleanup`` first, instead of being silently ignored until the next restart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor

ParamValue = bool | int | float | str | list[int] | list[str]
Check = Callable[[Any], str | None]

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_NAMESPACE = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_TOPIC = re.compile(r"^~?/?[A-Za-z_{][A-Za-z0-9_{}/~]*$")


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        return None

    return check


def _at_least(low: int) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"must be >= {low}, got {value}"

    return check


def _positive_float(value: Any) -> str | None:
    if not math.isfinite(value) or value <= 0:
        return f"must be a finite number > 0, got {value}"
    return None


def _non_negative_float(value: Any) -> str | None:
    if not math.isfinite(value) or value < 0:
        return f"must be a finite number >= 0, got {value}"
    return None


def _unit_interval(value: Any) -> str | None:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return f"must lie in [0, 1] (scores are attention probabilities), got {value}"
    return None


def _device(value: Any) -> str | None:
    if not _DEVICE.match(value):
        return f"must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}"
    return None


def _cameras(value: Any) -> str | None:
    bad = [name for name in value if not _NAMESPACE.match(name)]
    if bad:
        return f"must list camera namespaces (e.g. [front, rear]); invalid: {bad}"
    if len(set(value)) != len(value):
        return f"lists a camera twice: {list(value)}"
    return None


def _roi(value: Any) -> str | None:
    if len(value) != 4 or any(v < 0 for v in value):
        return f"must be [x, y, width, height] with 4 values >= 0 (all 0: none), got {list(value)}"
    return None


def _odd_window(value: Any) -> str | None:
    if value < 1 or value > 99 or value % 2 == 0:
        return f"must be an odd number of pixels in 1..99, got {value}"
    return None


def _fraction_of_box(value: Any) -> str | None:
    if not math.isfinite(value) or not 0.0 <= value <= 2.0:
        return f"must lie in [0, 2] (a fraction of the box's size), got {value}"
    return None


def _topic(value: Any) -> str | None:
    if not value or not _TOPIC.match(value) or "//" in value or value.endswith("/"):
        return (
            f"must be a valid ROS topic name (letters, digits, '_', '/', optional leading '~'), "
            f"got {value!r}"
        )
    return None


def _period(value: Any) -> str | None:
    if not math.isfinite(value) or not 0.05 <= value <= 3600.0:
        return f"must lie in [0.05, 3600] seconds, got {value}"
    return None


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: default (which fixes its type), description and check."""

    name: str
    default: ParamValue
    description: str
    check: Check | None = None
    runtime: bool = False
    constraints: str = ""

    @property
    def unset_when_empty(self) -> bool:
        """An empty list default: ROS cannot type it, so it is declared typed but unset."""
        return isinstance(self.default, list) and not self.default


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "bundle",
        "",
        "Directory of the trained bundle (written by skp-train). Required.",
        constraints="path to a bundle directory (or its bundle.json)",
    ),
    ParamSpec(
        "model",
        "",
        "Backbone to load instead of the one the bundle names: 'tiny', a diffusers folder, a "
        "cached hub id or an SD 1.x .safetensors file. Empty: the bundle's backbone.",
    ),
    ParamSpec(
        "device",
        "auto",
        "Torch device for the backbone. auto: CUDA when available, else the CPU with a "
        "warning in the log and diagnostics. An explicit cuda that is absent fails configure.",
        _device,
        constraints="auto | cpu | cuda | cuda:N | mps",
    ),
    ParamSpec(
        "dtype",
        "float32",
        "Backbone precision; float16 halves GPU memory and time. On CPU use float32.",
        _one_of("float32", "float16", "bfloat16"),
        constraints="float32 | float16 | bfloat16",
    ),
    ParamSpec(
        "num_views",
        0,
        "Test-time augmentation views averaged per frame (more: steadier, slower). "
        "0: the bundle's setting.",
        _at_least(0),
        constraints=">= 0",
    ),
    ParamSpec(
        "include_identity_view",
        False,
        "Make the un-augmented image one of the views (overrides the bundle's setting).",
    ),
    ParamSpec(
        "view_space",
        "",
        "Where test-time views are warped: image (exact, one VAE pass per view) or latent "
        "(one VAE pass per frame, approximate). Empty: the bundle's setting.",
        _one_of("", "image", "latent"),
        constraints="'' | image | latent",
    ),
    ParamSpec(
        "max_batch",
        0,
        "Largest number of views per UNet pass, to bound GPU memory. 0: all views at once.",
        _at_least(0),
        constraints=">= 0",
    ),
    ParamSpec(
        "readout",
        "subpixel",
        "How a keypoint is read from its map: 'argmax' (the paper's pixel centre), "
        "'subpixel' (peak refined between pixels, less jitter), 'weighted_avg' (the "
        "reference's centroid near the argmax, radius from the bundle's max_loc_distance) or "
        "'bundle' (the bundle's max_loc_strategy).",
        _one_of("argmax", "subpixel", "weighted_avg", "bundle"),
        constraints="argmax | subpixel | weighted_avg | bundle",
    ),
    ParamSpec(
        "num_subjects",
        0,
        "Instances of the object looked for per frame; every keypoint is read once per "
        "instance and the cloud's 'instance' field numbers them left to right. 0: the "
        "bundle's num_subjects (1 unless it was trained with more).",
        _at_least(0),
        constraints=">= 0",
    ),
    ParamSpec(
        "seed",
        0,
        "Seed of the augmentation views and noise: the same image always gives the same keypoints.",
        _at_least(0),
        constraints=">= 0",
    ),
    ParamSpec(
        "cameras",
        [],
        "Camera namespaces served by this one node and model (e.g. [front, rear]): camera C "
        "reads C/image, C/camera_info, C/depth, C/roi and publishes under ~/C/. Empty: one "
        "camera on image, camera_info, depth, roi and outputs directly under ~/.",
        _cameras,
        constraints="list of namespaces",
    ),
    ParamSpec(
        "image_topic",
        "image",
        "Input topic (remappable as 'image'); with input_transport 'compressed' the node "
        "subscribes to <image_topic>/compressed, as image_transport does.",
        _topic,
    ),
    ParamSpec(
        "input_transport",
        "raw",
        "'raw' (sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage).",
        _one_of("raw", "compressed"),
        constraints="raw | compressed",
    ),
    ParamSpec(
        "use_depth",
        False,
        "Subscribe to a depth image registered to the colour camera (depth: 16UC1 mm or "
        "32FC1 m) and publish metric 3-D keypoints (needs camera_info too).",
    ),
    ParamSpec(
        "depth_stamp_tolerance",
        0.05,
        "Largest stamp difference in seconds between an image and the depth image matched to "
        "it; frames without a match get rays (z = 1) instead of 3-D points.",
        _non_negative_float,
        runtime=True,
        constraints=">= 0",
    ),
    ParamSpec(
        "depth_window",
        5,
        "Side in pixels of the square around a keypoint whose valid depth pixels' median is "
        "its depth (robust at object edges); NaN when none is valid.",
        _odd_window,
        runtime=True,
        constraints="odd, 1..99",
    ),
    ParamSpec(
        "roi",
        [0, 0, 0, 0],
        "Static region of interest [x, y, width, height] in input pixels: the node crops to "
        "it (plus roi_margin), runs, and maps keypoints back. All 0: the whole image.",
        _roi,
        runtime=True,
        constraints="[x, y, width, height]",
    ),
    ParamSpec(
        "use_roi_topic",
        False,
        "Subscribe to roi (sensor_msgs/RegionOfInterest, e.g. from an object detector); the "
        "latest one replaces the static roi. An empty one (width or height 0) publishes nothing.",
    ),
    ParamSpec(
        "roi_margin",
        0.1,
        "Margin added on every side of the region of interest, as a fraction of its size.",
        _fraction_of_box,
        runtime=True,
        constraints="0.0 .. 2.0",
    ),
    ParamSpec(
        "marker_diameter",
        0.03,
        "Diameter in metres of the ~/markers spheres (labels are as tall).",
        _positive_float,
        runtime=True,
        constraints="> 0",
    ),
    ParamSpec(
        "score_threshold",
        0.0,
        "Keypoints whose score (peak attention probability) is below this are omitted from "
        "~/keypoints and the overlay; their ids are simply absent from the cloud.",
        _unit_interval,
        runtime=True,
        constraints="0.0 .. 1.0",
    ),
    ParamSpec(
        "smoothing",
        "none",
        "Temporal filter of keypoint positions over input header stamps: 'none' or 'one_euro'.",
        _one_of("none", "one_euro"),
        runtime=True,
        constraints="none | one_euro",
    ),
    ParamSpec(
        "smoothing_min_cutoff",
        1.0,
        "One-Euro minimum cutoff in Hz (lower: steadier still keypoints, more lag).",
        _positive_float,
        runtime=True,
        constraints="> 0",
    ),
    ParamSpec(
        "smoothing_beta",
        0.0,
        "One-Euro speed coefficient (higher: less lag on fast motion).",
        _non_negative_float,
        runtime=True,
        constraints=">= 0",
    ),
    ParamSpec(
        "smoothing_d_cutoff",
        1.0,
        "One-Euro cutoff of the speed estimate in Hz.",
        _positive_float,
        runtime=True,
        constraints="> 0",
    ),
    ParamSpec(
        "debug_heatmap",
        False,
        "Blend the keypoint attention maps into ~/debug_image (only rendered while someone "
        "subscribes to it).",
        runtime=True,
    ),
    ParamSpec(
        "diagnostics_period",
        1.0,
        "Seconds between /diagnostics messages.",
        _period,
        runtime=True,
        constraints="0.05 .. 3600",
    ),
    ParamSpec(
        "expected_rate_min",
        0.0,
        "Lowest acceptable rate of processed frames in Hz (diagnostics WARN below it, with "
        "10 % tolerance, as diagnostic_updater's FrequencyStatus). 0: no lower bound.",
        _non_negative_float,
        runtime=True,
        constraints=">= 0",
    ),
    ParamSpec(
        "expected_rate_max",
        0.0,
        "Highest acceptable rate of processed frames in Hz (WARN above it). 0: no upper bound.",
        _non_negative_float,
        runtime=True,
        constraints=">= 0",
    ),
    ParamSpec(
        "input_timeout",
        5.0,
        "Seconds without an input image after which diagnostics report ERROR (camera down "
        "or a QoS mismatch).",
        _positive_float,
        runtime=True,
        constraints="> 0",
    ),
    ParamSpec(
        "max_stamp_age",
        5.0,
        "Largest acceptable age in seconds of an image's stamp when it arrives (diagnostics "
        "ERROR beyond it, or for stamps more than 1 s in the future: TimeStampStatus).",
        _positive_float,
        runtime=True,
        constraints="> 0",
    ),
    ParamSpec(
        "lazy",
        False,
        "Subscribe to images only while ~/keypoints, ~/landmarks or ~/debug_image has a "
        "subscriber (saves the GPU when nobody listens).",
        runtime=True,
    ),
    ParamSpec(
        "allow_download",
        False,
        "Let configure download a hub model missing from the local Hugging Face cache. Off: "
        "the node never touches the network (robots run offline) and says what is missing.",
    ),
    ParamSpec(
        "autostart",
        True,
        "The executable configures and activates the node itself at start-up (for ros2 run / "
        "ros2 launch without a lifecycle manager). If that fails it exits with code 1.",
    ),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}
RUNTIME_PARAMETERS: frozenset[str] = frozenset(s.name for s in PARAMETERS if s.runtime)


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor: the description plus, where useful, the allowed values."""
    when = "any time" if spec.runtime else "while unconfigured (read on configure)"
    constraints = f"{spec.constraints}; " if spec.constraints else ""
    return ParameterDescriptor(
        name=spec.name,
        description=spec.description,
        additional_constraints=f"{constraints}changeable {when}",
    )


def check_value(name: str, value: Any) -> str | None:
    """Why `value` is not acceptable for parameter `name`, or None if it is."""
    spec = SPECS.get(name)
    if spec is None:
        return f"unknown parameter {name!r}"
    expected = type(spec.default)
    if isinstance(spec.default, list):
        if value is None and spec.unset_when_empty:
            return None  # declared but unset: the empty default
        if not isinstance(value, (list, tuple)) and type(value).__name__ != "array":
            return f"parameter {name!r} must be a list, got {type(value).__name__} {value!r}"
        value = list(value)
        item = type(spec.default[0]) if spec.default else str
        if any(type(v) is not item for v in value):
            return f"parameter {name!r} must be a list of {item.__name__}, got {value!r}"
    elif type(value) is not expected:
        return (
            f"parameter {name!r} must be of type {expected.__name__}, got "
            f"{type(value).__name__} {value!r}"
        )
    if spec.check is not None:
        problem = spec.check(value)
        if problem is not None:
            return f"parameter {name!r} {problem}"
    return None


@dataclass(frozen=True)
class NodeSettings:
    """A validated snapshot of every parameter, taken at configure."""

    bundle: str
    model: str
    device: str
    dtype: str
    num_views: int
    include_identity_view: bool
    view_space: str
    max_batch: int
    readout: str
    num_subjects: int
    seed: int
    cameras: tuple[str, ...]
    image_topic: str
    input_transport: str
    use_depth: bool
    depth_stamp_tolerance: float
    depth_window: int
    roi: tuple[int, ...]
    use_roi_topic: bool
    roi_margin: float
    marker_diameter: float
    score_threshold: float
    smoothing: str
    smoothing_min_cutoff: float
    smoothing_beta: float
    smoothing_d_cutoff: float
    debug_heatmap: bool
    diagnostics_period: float
    expected_rate_min: float
    expected_rate_max: float
    input_timeout: float
    max_stamp_age: float
    lazy: bool
    allow_download: bool
    autostart: bool

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        """Validate every value; raise ValueError listing all problems at once."""
        problems = [p for n in SPECS if (p := check_value(n, values.get(n))) is not None]
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**{f.name: normalized(f.name, values[f.name]) for f in fields(cls)})


def normalized(name: str, value: Any) -> Any:
    """A parameter value in its settled form: arrays as tuples, an unset list as ()."""
    if isinstance(SPECS[name].default, list):
        return tuple(value or ())
    return value


assert {f.name for f in fields(NodeSettings)} == set(SPECS), "NodeSettings must match PARAMETERS"

__all__ = [
    "PARAMETERS",
    "RUNTIME_PARAMETERS",
    "SPECS",
    "NodeSettings",
    "ParamSpec",
    "check_value",
    "descriptor",
    "normalized",
]
