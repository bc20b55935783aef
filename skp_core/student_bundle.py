"""A distilled student inside a bundle: ``student.onnx`` plus ``student.json``, checked on load.

The student is exported to ONNX so the node can run it through onnxruntime with no torch
model code, and a robot can load it from an untrusted copy: ONNX is a protobuf (parsing it
executes nothing) and the JSON records its sha256, so a corrupt, truncated or swapped file is
refused with one line, as the rest of the bundle is. The JSON also records the hash of the
teacher it was distilled from (:func:`teacher_hash`), so a student is never paired with other
tokens, the input size and normalization the graph expects, and the agreement figures measured
against the teacher.

``student.json`` is written last: it is the commit point, as ``bundle.json`` is for the bundle.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from skp_core.atomic_files import atomic_write_bytes, atomic_write_text
from skp_core.bundle import Bundle, BundleError
from skp_core.student_network import StudentConfig, StudentExport, StudentNet

__all__ = [
    "STUDENT_JSON",
    "STUDENT_ONNX",
    "StudentFiles",
    "export_onnx",
    "load_student",
    "save_student",
    "teacher_hash",
]

STUDENT_ONNX = "student.onnx"
STUDENT_JSON = "student.json"
FORMAT_NAME = "skp-student"
FORMAT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAMES = ("keypoints", "scores", "heatmaps")
OPSET = 17
_HINT = "distill the bundle again with skp-distill (or copy the whole bundle directory again)"


@dataclass
class StudentFiles:
    """A loaded, checked student: its shape, the ONNX bytes and the rest of its JSON."""

    config: StudentConfig
    onnx_bytes: bytes
    doc: dict[str, Any]


def teacher_hash(bundle: Bundle) -> str:
    """sha256 of what decides the teacher's keypoints: tokens, selection, method, backbone.

    The regressor and the names are left out: refitting landmarks or renaming keypoints does
    not change what the student imitates.
    """
    digest = hashlib.sha256()
    for tensor in (bundle.context.float(), bundle.selected_indices.long()):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    described = {"method": bundle.method, "backbone": bundle.backbone}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def export_onnx(net: StudentNet) -> bytes:
    """The student as ONNX bytes (batch axis dynamic); the same weights give the same bytes.

    Uses torch's TorchScript-based exporter: it needs nothing beyond torch and writes
    byte-stable files, which the dynamo exporter (and its onnxscript dependency) does not.
    """
    size = net.config.input_size
    example = torch.zeros(1, 3, size, size)
    buffer = io.BytesIO()
    model = StudentExport(net).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice, on every call
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=OPSET,
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
        )
    return _declare_output_shapes(buffer.getvalue(), net.config)


def _declare_output_shapes(data: bytes, config: StudentConfig) -> bytes:
    """Write the outputs' full shapes into the graph (the exporter leaves some symbolic)."""
    import onnx

    model = onnx.load_model_from_string(data)
    k, h = config.num_keypoints, config.heatmap_size
    shapes = {"keypoints": (k, 2), "scores": (k,), "heatmaps": (k, h, h)}
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(dims[1:], shapes[output.name], strict=True):
            dim.Clear()
            dim.dim_value = size
    return model.SerializeToString()


def save_student(
    bundle_dir: str | Path,
    bundle: Bundle,
    net: StudentNet,
    agreement: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Export ``net`` into ``bundle_dir`` (a saved ``bundle``) and return the JSON's path."""
    if net.config.num_keypoints != bundle.num_keypoints:
        raise BundleError(
            f"the student has {net.config.num_keypoints} keypoints, the bundle "
            f"{bundle.num_keypoints}: distill it from this bundle"
        )
    folder = Path(bundle_dir)
    data = export_onnx(net)
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "onnx": {"file": STUDENT_ONNX, "sha256": hashlib.sha256(data).hexdigest()},
        "teacher_hash": teacher_hash(bundle),
        "student": net.config.to_dict(),
        "inputs": {INPUT_NAME: ["batch", 3, net.config.input_size, net.config.input_size]},
        "outputs": list(OUTPUT_NAMES),
        "agreement": agreement or {},
        "training": training or {},
    }
    atomic_write_bytes(folder / STUDENT_ONNX, data)
    atomic_write_text(folder / STUDENT_JSON, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return folder / STUDENT_JSON


def _fail(file: Path, problem: str) -> BundleError:
    return BundleError(f"{file}: {problem}; {_HINT}")


def _read_doc(file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise BundleError(
            f"{file.parent}: the bundle has no distilled student ({STUDENT_JSON} is missing); "
            f"make one with skp-distill, or use engine:=diffusion"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(file, f"cannot be read as JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise _fail(file, f'is not an skp student description (format must be "{FORMAT_NAME}")')
    if doc.get("format_version") != FORMAT_VERSION:
        raise _fail(
            file,
            f"has format_version {doc.get('format_version')!r}; this skp reads {FORMAT_VERSION}",
        )
    return doc


def _check_graph(data: bytes, config: StudentConfig, file: Path) -> None:
    """Parse the protobuf and compare its inputs and outputs with the JSON's shapes."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(file, f"is not a valid ONNX model ({first})") from None

    def dims(value: Any) -> list[int | str]:
        shape = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in shape]

    inputs = {i.name: dims(i) for i in model.graph.input}
    size, k, h = config.input_size, config.num_keypoints, config.heatmap_size
    expected_in = {INPUT_NAME: ["batch", 3, size, size]}
    if inputs != expected_in:
        raise _fail(file, f"takes inputs {inputs}, but {STUDENT_JSON} describes {expected_in}")
    outputs = {o.name: dims(o) for o in model.graph.output}
    expected_out = {
        "keypoints": ["batch", k, 2],
        "scores": ["batch", k],
        "heatmaps": ["batch", k, h, h],
    }
    if outputs != expected_out:
        raise _fail(file, f"gives outputs {outputs}, expected {expected_out}")


def load_student(bundle_dir: str | Path, bundle: Bundle) -> StudentFiles:
    """Read and check the student of a loaded ``bundle``; every problem is one BundleError."""
    folder = Path(bundle_dir)
    json_file = folder / STUDENT_JSON
    doc = _read_doc(json_file)
    try:
        config = StudentConfig.from_dict(doc.get("student"))
    except (ValueError, TypeError) as exc:
        raise _fail(json_file, f"student: {exc}") from None
    if config.num_keypoints != bundle.num_keypoints:
        raise _fail(
            json_file,
            f"describes {config.num_keypoints} keypoints but the bundle has {bundle.num_keypoints}",
        )
    if doc.get("teacher_hash") != teacher_hash(bundle):
        raise _fail(
            json_file,
            "was distilled from another teacher (its teacher_hash does not match this "
            "bundle's tokens, selection and settings)",
        )
    onnx_info = doc.get("onnx")
    sha = onnx_info.get("sha256") if isinstance(onnx_info, dict) else None
    if not isinstance(sha, str) or len(sha) != 64 or onnx_info.get("file") != STUDENT_ONNX:
        raise _fail(json_file, f'lacks "onnx": {{"file": "{STUDENT_ONNX}", "sha256": ...}}')
    onnx_file = folder / STUDENT_ONNX
    try:
        data = onnx_file.read_bytes()
    except OSError as exc:
        raise _fail(onnx_file, f"cannot be read ({exc.strerror or exc})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha:
        raise _fail(
            onnx_file,
            f"does not match {STUDENT_JSON} (sha256 {actual[:16]}..., expected {sha[:16]}...): "
            f"the file is corrupt or comes from another distillation",
        )
    _check_graph(data, config, onnx_file)
    return StudentFiles(config=config, onnx_bytes=data, doc=doc)
