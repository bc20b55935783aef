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

ParamValue = bool | int | float | str
Check = Callable[[Any], str | None]

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
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
        return f"must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}"
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


_RELIABILITY = ("reliable", "best_effort")
_DURABILITY = ("volatile", "transient_local")
_HISTORY = ("keep_last", "keep_all")


def _qos_specs(prefix: str, reliability: str, depth: int, what: str) -> tuple[ParamSpec, ...]:
    return (
        ParamSpec(
            f"{prefix}_qos_reliability",
            reliability,
            f"QoS reliability of the {what}.",
            _one_of(*_RELIABILITY),
            constraints="reliable | best_effort",
        ),
        ParamSpec(
            f"{prefix}_qos_durability",
            "volatile",
            f"QoS durability of the {what}.",
            _one_of(*_DURABILITY),
            constraints="volatile | transient_local",
        ),
        ParamSpec(
            f"{prefix}_qos_history",
            "keep_last",
            f"QoS history of the {what}.",
            _one_of(*_HISTORY),
            constraints="keep_last | keep_all",
        ),
        ParamSpec(
            f"{prefix}_qos_depth",
            depth,
            f"QoS history depth of the {what}.",
            _at_least(1),
            constraints=">= 1",
        ),
    )


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
        "cuda",
        "Torch device for the backbone. If CUDA is requested but absent, configure fails "
        "unless allow_cpu_fallback is true.",
        _device,
        constraints="cpu | cuda | cuda:N | mps",
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
    *_qos_specs("input", "best_effort", 1, "image subscription (sensor-data QoS by default)"),
    *_qos_specs("output", "reliable", 5, "keypoint, landmark and debug image publishers"),
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
        "lazy",
        False,
        "Subscribe to images only while ~/keypoints, ~/landmarks or ~/debug_image has a "
        "subscriber (saves the GPU when nobody listens).",
        runtime=True,
    ),
    ParamSpec(
        "allow_cpu_fallback",
        False,
        "If the requested CUDA device is absent, run on the CPU (float32) with a warning "
        "instead of failing configure.",
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
    if type(value) is not expected:
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
    image_topic: str
    input_transport: str
    input_qos_reliability: str
    input_qos_durability: str
    input_qos_history: str
    input_qos_depth: int
    output_qos_reliability: str
    output_qos_durability: str
    output_qos_history: str
    output_qos_depth: int
    score_threshold: float
    smoothing: str
    smoothing_min_cutoff: float
    smoothing_beta: float
    smoothing_d_cutoff: float
    debug_heatmap: bool
    diagnostics_period: float
    lazy: bool
    allow_cpu_fallback: bool
    allow_download: bool
    autostart: bool

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        """Validate every value; raise ValueError listing all problems at once."""
        problems = [p for n in SPECS if (p := check_value(n, values.get(n))) is not None]
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**{f.name: values[f.name] for f in fields(cls)})


assert {f.name for f in fields(NodeSettings)} == set(SPECS), "NodeSettings must match PARAMETERS"

__all__ = [
    "PARAMETERS",
    "RUNTIME_PARAMETERS",
    "SPECS",
    "NodeSettings",
    "ParamSpec",
    "check_value",
    "descriptor",
]
