"""The trained artifact: learned context tokens, selected indices and an optional regressor.

`skp-train` writes a bundle and the ROS node loads it, usually on another machine and months
later, so loading is defensive: every way a bundle can be broken, truncated, edited, or paired
with the wrong backbone ends in one `BundleError` that names the file, says what is wrong and
what to do, instead of a shape error deep inside the UNet.

Layout: a bundle is a DIRECTORY holding two files.

- ``tensors.safetensors``: ``context`` [T, D] float32, ``selected_indices`` [K] int64 and,
  when a regressor was fitted, ``regressor`` [2K, 2J] float32. safetensors cannot execute code
  on load (unlike pickle / ``torch.load``), so a bundle from an untrusted source is safe to open.
- ``bundle.json``: everything else (names, colours, backbone, method and training settings,
  dataset, metrics) as human-readable JSON beside the tensors, so a person can inspect or diff
  a bundle with a text editor, and other tools can read it without torch. It records the
  sha256 of the tensors file, which detects corruption and a tensors file copied from another
  bundle.

A directory (rather than one file with JSON in the safetensors header) keeps the metadata
readable and editable with ordinary tools while the tensors stay in a standard format.

``Bundle.backbone`` should hold ``{"model": <hub id or path>, "fingerprint": <the backbone's
architecture fingerprint dict>}``; both are used by the compatibility check and its messages.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from skp_core import safetensors_io
from skp_core.atomic_files import interrupted_backups, replace_dir
from skp_core.config import settings_problem
from skp_core.palette import default_colors, default_keypoint_names

BUNDLE_FORMAT_VERSION = 1
"""Version of the on-disk layout; bump on any incompatible change and keep reading old ones."""

FORMAT_NAME = "skp-bundle"
JSON_FILE = "bundle.json"
TENSORS_FILE = "tensors.safetensors"

STUDENT_FILES = ("student.onnx", "student.json")
"""A distilled student's files (skp_core.student_bundle), allowed inside a bundle directory."""

_RETRAIN_HINT = "re-export the bundle with skp-train (or copy the whole bundle directory again)"
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class BundleError(Exception):
    """A bundle cannot be saved or loaded; the message says which file, what and what to do."""


def _created() -> str | None:
    """``SOURCE_DATE_EPOCH`` as an ISO time, else None.

    A wall-clock time would make two identical runs write different bytes; the reproducible
    builds convention is to stamp only the time a user asks for. The run's stages.json still
    says when each stage finished.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        return None
    try:
        moment = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    except (ValueError, OverflowError, OSError):
        raise BundleError(
            f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time in seconds; set it to one "
            f"(e.g. $(git log -1 --format=%ct)) or unset it"
        ) from None
    return moment.isoformat(timespec="seconds")


def _skp_version() -> str:
    """Version of the installed package, so a bundle says which code produced it."""
    import importlib.metadata

    try:
        return importlib.metadata.version("skp_ros")
    except importlib.metadata.PackageNotFoundError:
        import skp_core

        return str(getattr(skp_core, "__version__", "unknown"))


@dataclass(eq=False)
class Bundle:
    """Everything the detector needs besides the backbone weights.

    ``eq=False`` because tensor fields make the generated ``__eq__`` ambiguous; compare fields.
    Empty ``keypoint_names`` / ``keypoint_colors`` are filled with defaults for K keypoints.
    Colours are RGB tuples in 0..255.
    """

    context: torch.Tensor
    selected_indices: torch.Tensor
    regressor: torch.Tensor | None = None
    landmark_names: list[str] | None = None
    keypoint_names: list[str] = field(default_factory=list)
    keypoint_colors: list[tuple[int, int, int]] = field(default_factory=list)
    backbone: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    format_version: int = BUNDLE_FORMAT_VERSION
    created: str | None = field(default_factory=_created)
    skp_version: str = field(default_factory=_skp_version)

    def __post_init__(self) -> None:
        k = int(self.selected_indices.numel()) if torch.is_tensor(self.selected_indices) else 0
        if not self.keypoint_names:
            self.keypoint_names = default_keypoint_names(k)
        if not self.keypoint_colors:
            self.keypoint_colors = default_colors(k)

    @property
    def num_tokens(self) -> int:
        """T, the number of learned tokens (all are needed: attention softmax is over tokens)."""
        return int(self.context.shape[0])

    @property
    def context_dim(self) -> int:
        """D, the cross-attention dimension of the backbone the bundle was trained for."""
        return int(self.context.shape[1])

    @property
    def num_keypoints(self) -> int:
        """K, the number of selected tokens, i.e. keypoints per image."""
        return int(self.selected_indices.numel())

    @property
    def num_landmarks(self) -> int | None:
        """J, the number of regressed dataset landmarks, or None without a regressor."""
        return None if self.regressor is None else int(self.regressor.shape[1]) // 2

    def validate(self) -> None:
        """Raise `BundleError` if the fields are inconsistent (shapes, ranges, names, NaN)."""
        problem = _bundle_problem(self)
        if problem is not None:
            raise BundleError(f"invalid bundle: {problem}")


# --------------------------------------------------------------------------- validation


def _names_problem(names: Any, what: str, expected: int | None) -> str | None:
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        return f"{what} must be a list of non-empty strings, got {names!r:.200}"
    if expected is not None and len(names) != expected:
        return f"{what} has {len(names)} entries but {expected} are needed"
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        return f"{what} contains duplicates: {dupes}"
    return None


def _colors_problem(colors: Any, expected: int) -> str | None:
    if not isinstance(colors, list) or len(colors) != expected:
        return f"keypoint_colors must be a list of {expected} RGB triples, got {colors!r:.200}"
    for c in colors:
        ok = isinstance(c, list | tuple) and len(c) == 3
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        if not ok:
            return f"keypoint_colors entry {c!r} is not an RGB triple of ints in 0..255"
    return None


CONTEXT_LIMIT = 1e3
"""Largest |value| a trained context may hold. Optimization starts from N(0, 1) (|value| < 6
for any practical size) and Adam moves a value by about lr per step: 500 steps at lr 5e-3 add
2.5, the tiny model's 60 at 0.05 add 3. Beyond this bound the context was rescaled or
corrupted, and its attention saturates (every keypoint lands in one corner with score 0)."""


def _context_scale_problem(ctx: torch.Tensor) -> str | None:
    peak = float(ctx.abs().max())
    rms = float(ctx.square().mean().sqrt())
    if peak > CONTEXT_LIMIT:
        return (
            f"context values reach {peak:.3g} (RMS {rms:.3g}), but training starts from "
            f"N(0, 1) and moves a value by about lr per step, so trained contexts stay within "
            f"+-{CONTEXT_LIMIT:g}: it was rescaled or corrupted"
        )
    if ctx.shape[0] > 1 and bool((ctx == ctx[:1]).all()):
        return (
            f"all {ctx.shape[0]} context tokens are identical (RMS {rms:.3g}), so every "
            f"token gets the same attention and every map is flat; training never produces this"
        )
    return None


def _method_problem(method: Any) -> str | None:
    if not isinstance(method, dict):
        return None  # reported with the other dict fields
    problem = settings_problem(method)
    return None if problem is None else f"method.{problem}"


def _bundle_problem(b: Bundle) -> str | None:
    """First inconsistency found in a bundle, as a sentence, or None when it is valid."""
    ctx, idx, reg = b.context, b.selected_indices, b.regressor
    if not torch.is_tensor(ctx) or ctx.dtype != torch.float32 or ctx.ndim != 2:
        return f"context must be a 2-D float32 tensor [T, D], got {_describe_tensor(ctx)}"
    if ctx.shape[0] < 1 or ctx.shape[1] < 1:
        return f"context must have at least one token and one channel, got {tuple(ctx.shape)}"
    if not bool(torch.isfinite(ctx).all()):
        return "context contains NaN or inf values (the optimization diverged)"
    problem = _context_scale_problem(ctx)
    if problem:
        return problem
    if not torch.is_tensor(idx) or idx.dtype != torch.int64 or idx.ndim != 1:
        return f"selected_indices must be a 1-D int64 tensor [K], got {_describe_tensor(idx)}"
    t, k = int(ctx.shape[0]), int(idx.numel())
    if k < 1:
        return "selected_indices is empty; at least one keypoint is needed"
    bad = idx[(idx < 0) | (idx >= t)]
    if bad.numel():
        return f"selected_indices contains {bad.tolist()}, outside the token range [0, {t})"
    if int(torch.unique(idx).numel()) != k:
        return f"selected_indices contains duplicates: {idx.tolist()}"
    if reg is not None:
        if not torch.is_tensor(reg) or reg.dtype != torch.float32 or reg.ndim != 2:
            return f"regressor must be a 2-D float32 tensor [2K, 2J], got {_describe_tensor(reg)}"
        if reg.shape[0] != 2 * k or reg.shape[1] < 2 or reg.shape[1] % 2:
            return (
                f"regressor has shape {tuple(reg.shape)} but K = {k} keypoints need "
                f"[{2 * k}, 2J] with J >= 1 landmarks"
            )
        if not bool(torch.isfinite(reg).all()):
            return "regressor contains NaN or inf values"
    if b.landmark_names is not None:
        if reg is None:
            return "landmark_names are given but there is no regressor to predict them"
        problem = _names_problem(b.landmark_names, "landmark_names", int(reg.shape[1]) // 2)
        if problem:
            return problem
    problem = _names_problem(b.keypoint_names, "keypoint_names", k)
    if problem:
        return problem
    problem = _colors_problem(b.keypoint_colors, k)
    if problem:
        return problem
    for name in ("backbone", "method", "training"):
        if not isinstance(getattr(b, name), dict):
            return f"{name} must be a dict, got {type(getattr(b, name)).__name__}"
    for name in ("dataset", "metrics"):
        value = getattr(b, name)
        if value is not None and not isinstance(value, dict):
            return f"{name} must be a dict or None, got {type(value).__name__}"
    problem = _method_problem(b.method)
    if problem:
        return problem
    n_tokens = b.method.get("num_tokens")
    if isinstance(n_tokens, int) and n_tokens != t:
        return f"method.num_tokens = {n_tokens} but the context has {t} tokens"
    if not isinstance(b.created, str | None) or not isinstance(b.skp_version, str):
        return "created must be a string or None and skp_version a string"
    return None


def _describe_tensor(x: Any) -> str:
    if torch.is_tensor(x):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


# --------------------------------------------------------------------------- compatibility


def _jsonable(value: Any) -> Any:
    """The value as it reads back from JSON, so live and loaded fingerprints compare equal."""

    def fallback(v: Any) -> Any:
        try:
            return _json_default(v)
        except TypeError:
            return repr(v)

    return json.loads(json.dumps(value, default=fallback))


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, a value, b value) where the values differ, over keys both mappings have."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(a) & set(b), key=str):
            out += _diff(a[key], b[key], f"{prefix}{key}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


# Where the weights came from is not architecture: the same SD 1.5 loaded from the hub id, a
# local copy or a single file must stay compatible, so these top-level keys are not compared.
_IDENTITY_KEYS = frozenset({"model", "model_id", "name", "id", "path"})


def _backbone_label(fingerprint: Mapping[str, Any] | None, name: str | None) -> str:
    if name:
        return name
    for key in ("model", "name", "model_id", "id", "kind"):
        if fingerprint and isinstance(fingerprint.get(key), str):
            return str(fingerprint[key])
    return "unnamed backbone"


def _compat_problem(
    bundle: Bundle,
    context_dim: int | None,
    fingerprint: Mapping[str, Any] | None,
    backbone_name: str | None,
) -> str | None:
    saved = bundle.backbone.get("fingerprint")
    trained_for = _backbone_label(saved if isinstance(saved, dict) else None, None)
    trained_for = str(
        bundle.backbone.get("model") or bundle.backbone.get("model_id") or trained_for
    )
    loaded = _backbone_label(fingerprint, backbone_name)
    if context_dim is not None and int(context_dim) != bundle.context_dim:
        return (
            f"bundle was trained for a backbone with cross-attention dim {bundle.context_dim} "
            f"({trained_for}) but the loaded backbone has {int(context_dim)} ({loaded}); load "
            f"the backbone the bundle was trained with or train a bundle for this backbone"
        )
    if fingerprint is None or not isinstance(saved, dict):
        return None
    live = _jsonable({k: v for k, v in fingerprint.items() if k not in _IDENTITY_KEYS})
    saved = _jsonable({k: v for k, v in saved.items() if k not in _IDENTITY_KEYS})
    diffs = _diff(saved, live)
    if not diffs:
        return None
    keys = ", ".join(k for k, _, _ in diffs)
    details = "; ".join(f"{k}: bundle {a!r} vs loaded {b!r}" for k, a, b in diffs)
    return (
        f"bundle was trained for backbone {trained_for} but the loaded backbone ({loaded}) "
        f"differs in its architecture fingerprint keys {keys} ({details}); load the backbone "
        f"the bundle was trained with or train a bundle for this backbone"
    )


def check_compatible(
    bundle: Bundle,
    context_dim: int | None,
    fingerprint: Mapping[str, Any] | None,
    *,
    backbone_name: str | None = None,
) -> None:
    """Raise `BundleError` if the bundle cannot drive the loaded backbone.

    The context width must equal the backbone's cross-attention dim; fingerprints are compared
    on the keys present in both (a fingerprint may gain keys over time without invalidating
    older bundles), recursively, except the identity keys (``model_id``, ``model``, ``name``,
    ``id``, ``path``) that say where the weights came from. ``None`` skips a check.
    ``backbone_name`` only improves the message.
    """
    problem = _compat_problem(bundle, context_dim, fingerprint, backbone_name)
    if problem is not None:
        raise BundleError(problem)


# --------------------------------------------------------------------------- saving


def _json_default(value: Any) -> Any:
    """Convert the few non-JSON types a config commonly holds; anything else is an error."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _summary(b: Bundle) -> dict[str, Any]:
    """Fields derived from the tensors, written to the JSON for humans and cross-checked."""
    return {
        "num_tokens": b.num_tokens,
        "context_dim": b.context_dim,
        "num_keypoints": b.num_keypoints,
        "selected_indices": [int(i) for i in b.selected_indices.tolist()],
        "has_regressor": b.regressor is not None,
    }


def _prepare(bundle: Bundle) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Validate, then split into tensors and a JSON document (without the checksum yet)."""
    if bundle.format_version != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"cannot save format_version {bundle.format_version}: this skp writes version "
            f"{BUNDLE_FORMAT_VERSION} only; leave format_version at its default"
        )
    problem = _bundle_problem(bundle)
    if problem is not None:
        raise BundleError(f"refusing to save an invalid bundle: {problem}")
    tensors = {
        "context": bundle.context.detach().cpu().contiguous(),
        "selected_indices": bundle.selected_indices.detach().cpu().contiguous(),
    }
    if bundle.regressor is not None:
        tensors["regressor"] = bundle.regressor.detach().cpu().contiguous()
    doc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": BUNDLE_FORMAT_VERSION,
        "skp_version": bundle.skp_version,
        "created": bundle.created,
        **_summary(bundle),
        "keypoint_names": list(bundle.keypoint_names),
        "keypoint_colors": [list(c) for c in bundle.keypoint_colors],
        "landmark_names": None if bundle.landmark_names is None else list(bundle.landmark_names),
        "backbone": bundle.backbone,
        "method": bundle.method,
        "training": bundle.training,
        "dataset": bundle.dataset,
        "metrics": bundle.metrics,
    }
    return tensors, doc


def _pretty_json(value: Any, level: int = 0) -> str:
    """Indented JSON with lists of scalars kept on one line (indices, colours stay readable)."""
    pad, end = "  " * (level + 1), "  " * level
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(k)}: {_pretty_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}" + ("\n" if level == 0 else "")
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = [pad + _pretty_json(v, level + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + end + "]"
    return json.dumps(value, allow_nan=False)


def _check_replaceable(path: Path) -> None:
    """Only an existing bundle (or an empty directory) may be replaced, never other data."""
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise BundleError(f"{path}: exists and is not a bundle directory; choose another path")
    # A distilled student (skp_core.student_bundle) may sit beside the tensors; replacing the
    # bundle drops it, as the teacher it imitated is being replaced too.
    extra = sorted(set(os.listdir(path)) - {JSON_FILE, TENSORS_FILE, *STUDENT_FILES})
    if extra:
        raise BundleError(
            f"{path}: exists and holds files that are not part of a bundle ({', '.join(extra)}); "
            f"refusing to replace it: choose another path or remove that directory"
        )


def save_bundle(bundle: Bundle, path: str | os.PathLike[str]) -> Path:
    """Write ``bundle`` as a directory at ``path`` and return the path.

    The same bundle always gives the same bytes (sorted safetensors metadata, no wall-clock
    time unless ``SOURCE_DATE_EPOCH`` asks for one). Written with `replace_dir`: a failure
    never leaves a half-written bundle where a good one was; a hard crash between its two
    renames leaves the old bundle as ``.<name>.old-*`` beside ``path`` (`load_bundle` points
    at it).
    """
    path = Path(path).absolute()
    tensors, doc = _prepare(bundle)
    try:
        data = safetensors_io.serialize(
            tensors, metadata={"format": FORMAT_NAME, "format_version": str(BUNDLE_FORMAT_VERSION)}
        )
    except Exception as e:
        raise BundleError(f"{path}: could not serialize the tensors: {e}") from e
    doc["tensors"] = {"file": TENSORS_FILE, "sha256": hashlib.sha256(data).hexdigest()}
    try:
        text = _pretty_json(json.loads(json.dumps(doc, allow_nan=False, default=_json_default)))
    except (TypeError, ValueError) as e:
        raise BundleError(
            f"{path}: bundle metadata is not plain JSON ({e}); use str/int/float/bool/None, lists "
            f"and dicts in backbone/method/training/dataset/metrics, and None instead of NaN"
        ) from e

    def build(folder: Path) -> None:
        (folder / TENSORS_FILE).write_bytes(data)
        (folder / JSON_FILE).write_bytes(text.encode("utf-8"))

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_replaceable(path)
        replace_dir(path, build)
    except OSError as e:
        raise BundleError(
            f"{path}: could not write the bundle ({e}); any previous bundle there is unchanged"
        ) from e
    return path


# --------------------------------------------------------------------------- loading


def _fail(file: Path, problem: str, hint: str = _RETRAIN_HINT) -> BundleError:
    return BundleError(f"{file}: {problem}; {hint}")


def _missing_dir_hint(path: Path) -> str:
    backups = [b for b in interrupted_backups(path) if (b / JSON_FILE).is_file()]
    if backups:
        return (
            f"an interrupted save left the previous bundle at {backups[-1]}: rename it to "
            f"{path} to use it"
        )
    return "check the path (a bundle is the directory skp-train wrote, holding bundle.json)"


def _read_json(path: Path) -> dict[str, Any]:
    json_path = path / JSON_FILE
    try:
        raw = json_path.read_bytes()
    except FileNotFoundError:
        raise _fail(json_path, "file is missing, so this is not a complete bundle") from None
    except OSError as e:
        raise _fail(json_path, f"cannot be read ({e})", "check its permissions") from e
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _fail(json_path, f"is not UTF-8 text ({e})") from e
    except json.JSONDecodeError as e:
        raise _fail(
            json_path, f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from e
    if not isinstance(doc, dict):
        raise _fail(json_path, f"must hold a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT_NAME:
        raise _fail(
            json_path,
            f'has format {doc.get("format")!r}, expected "{FORMAT_NAME}": not an skp bundle',
            "pass the directory skp-train wrote",
        )
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(json_path, f"has an invalid format_version {version!r}")
    if version > BUNDLE_FORMAT_VERSION:
        raise _fail(
            json_path,
            f"has format_version {version}, newer than the {BUNDLE_FORMAT_VERSION} this skp reads",
            "upgrade skp on this machine, or re-export the bundle with this skp version",
        )
    return doc


def _field(doc: dict[str, Any], key: str, types: type | tuple[type, ...], file: Path) -> Any:
    if key not in doc:
        raise _fail(file, f'lacks the field "{key}"')
    value = doc[key]
    if not isinstance(value, types):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise _fail(file, f'field "{key}" must be {names}, got {type(value).__name__}')
    return value


def _check_safetensors_layout(data: bytes, file: Path) -> None:
    """Check the header and sizes ourselves to say 'truncated' instead of a parser error."""
    if len(data) < 8:
        raise _fail(file, f"is truncated ({len(data)} bytes, not even a header)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise _fail(
            file,
            f"is truncated or its header is corrupt (header of {header_len} bytes announced, "
            f"file has {len(data)} bytes)",
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(file, f"has a corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise _fail(file, "has a corrupt safetensors header (not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
        ):
            raise _fail(file, f"has a corrupt safetensors header entry for {name!r}")
        end = max(end, offsets[1])
    available = len(data) - 8 - header_len
    if available < end:
        raise _fail(
            file,
            f"is truncated (header announces {end} bytes of tensor data, file holds {available})",
        )
    if available > end:
        raise _fail(file, f"has {available - end} unexpected trailing bytes after the tensor data")


def _read_tensors(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    file = path / TENSORS_FILE
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise _fail(file, "file is missing, so this is not a complete bundle") from None
    except OSError as e:
        raise _fail(file, f"cannot be read ({e})", "check its permissions") from e
    _check_safetensors_layout(data, file)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256.lower():
        raise _fail(
            file,
            f"does not match {JSON_FILE} (sha256 {actual[:16]}..., expected {sha256[:16]}...): "
            f"the file is corrupt or the two files come from different saves",
        )
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:
        raise _fail(file, f"cannot be parsed as safetensors ({e})") from e
    missing = [n for n in ("context", "selected_indices") if n not in tensors]
    if missing:
        raise _fail(file, f"lacks the tensor(s) {', '.join(missing)}")
    unknown = sorted(set(tensors) - {"context", "selected_indices", "regressor"})
    if unknown:
        raise _fail(file, f"holds unexpected tensors {', '.join(unknown)}")
    return tensors


def load_bundle(
    path: str | os.PathLike[str],
    *,
    expected_context_dim: int | None = None,
    expected_fingerprint: Mapping[str, Any] | None = None,
    backbone_name: str | None = None,
) -> Bundle:
    """Read and validate a bundle directory; every problem raises `BundleError`.

    ``path`` may also point at the ``bundle.json`` inside it. With ``expected_context_dim`` /
    ``expected_fingerprint`` (the loaded backbone's values) the bundle is also checked against
    the backbone (see `check_compatible`); ``backbone_name`` only improves that message.
    """
    path = Path(path)
    if path.is_file() and path.name == JSON_FILE:
        path = path.parent
    if not path.exists():
        raise BundleError(f"{path}: bundle directory does not exist; {_missing_dir_hint(path)}")
    if not path.is_dir():
        raise BundleError(
            f"{path}: is a file, not a bundle directory; pass the directory skp-train wrote"
        )
    doc = _read_json(path)
    json_file = path / JSON_FILE
    tensors_info = _field(doc, "tensors", dict, json_file)
    sha = tensors_info.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise _fail(json_file, "lacks a valid tensors.sha256 checksum")
    if tensors_info.get("file") != TENSORS_FILE:
        raise _fail(json_file, f'tensors.file must be "{TENSORS_FILE}"')
    tensors = _read_tensors(path, sha)

    names = _field(doc, "keypoint_names", list, json_file)
    colors = _field(doc, "keypoint_colors", list, json_file)
    if not names or not colors:
        raise _fail(json_file, "keypoint_names and keypoint_colors must not be empty")
    landmark_names = _field(doc, "landmark_names", (list, type(None)), json_file)
    bundle = Bundle(
        context=tensors["context"],
        selected_indices=tensors["selected_indices"],
        regressor=tensors.get("regressor"),
        landmark_names=landmark_names,
        keypoint_names=names,
        keypoint_colors=[tuple(c) if isinstance(c, list) else c for c in colors],
        backbone=_field(doc, "backbone", dict, json_file),
        method=_field(doc, "method", dict, json_file),
        training=_field(doc, "training", dict, json_file),
        dataset=_field(doc, "dataset", (dict, type(None)), json_file),
        metrics=_field(doc, "metrics", (dict, type(None)), json_file),
        format_version=doc["format_version"],
        created=_field(doc, "created", (str, type(None)), json_file),
        skp_version=_field(doc, "skp_version", str, json_file),
    )
    problem = _bundle_problem(bundle)
    if problem is not None:
        in_tensors = problem.startswith(("context", "selected_indices", "regressor"))
        raise _fail(path / (TENSORS_FILE if in_tensors else JSON_FILE), problem)
    summary = _summary(bundle)
    differing = [k for k, v in summary.items() if k in doc and doc[k] != v]
    if differing:
        details = ", ".join(f"{k} = {doc[k]!r} vs {summary[k]!r}" for k in differing)
        raise _fail(
            json_file,
            f"disagrees with {TENSORS_FILE} ({details}): the files do not belong together",
        )
    problem = _compat_problem(bundle, expected_context_dim, expected_fingerprint, backbone_name)
    if problem is not None:
        raise BundleError(f"{path}: {problem}")
    return bundle


# --------------------------------------------------------------------------- summary


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, default=_json_default, sort_keys=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kv(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v, 60)}" for k, v in d.items()) or "-"


def describe(bundle: Bundle) -> str:
    """A few lines for CLIs and logs: what the bundle was trained on and what it outputs."""
    model = bundle.backbone.get("model", "unknown backbone")
    lines = [
        f"skp bundle (format {bundle.format_version}, skp {bundle.skp_version}"
        + (f", created {bundle.created})" if bundle.created else ")"),
        f"  backbone: {model} (cross-attention dim {bundle.context_dim})",
        f"  tokens: {bundle.num_tokens} learned, {bundle.num_keypoints} selected "
        f"{bundle.selected_indices.tolist()}",
        f"  keypoints: {', '.join(bundle.keypoint_names)}",
    ]
    if bundle.regressor is None:
        lines.append("  regressor: none")
    else:
        names = bundle.landmark_names or [f"landmark{j}" for j in range(bundle.num_landmarks or 0)]
        lines.append(
            f"  regressor: {bundle.num_keypoints} keypoints -> {len(names)} landmarks "
            f"({', '.join(names)})"
        )
    lines.append(f"  method: {_kv(bundle.method)}")
    lines.append(f"  training: {_kv(bundle.training)}")
    if bundle.dataset is not None:
        lines.append(f"  dataset: {_kv(bundle.dataset)}")
    if bundle.metrics is not None:
        metrics = {
            k: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v
            for k, v in bundle.metrics.items()
        }
        lines.append(f"  metrics: {_kv(metrics)}")
    return "\n".join(lines)


__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "check_compatible",
    "default_colors",
    "default_keypoint_names",
    "describe",
    "load_bundle",
    "save_bundle",
]
