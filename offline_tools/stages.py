"""The stages of `skp-train`: optimize -> select -> precompute -> regress -> evaluate -> report.

Each stage reads the previous stages' files in the run directory and writes its own, always
atomically (temporary file + rename), so a crash never leaves a half-written output and loses
nothing already finished. A stage is "up to date" when its outputs exist and were made from
exactly the current inputs: stages.json records, per stage, a key hashing the settings it
reads and the bytes of the files it consumed. Rerunning a command therefore skips finished
work, and changing a setting (or continuing the optimization) reruns only what depends on it.

All method logic lives in skp_core; this module only moves data between it and files.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import io
import json
import math
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader

from offline_tools.datasets import KeypointDataset, load_dataset
from offline_tools.distributed import Distributed
from offline_tools.experiment_log import ExperimentLog
from offline_tools.run_layout import (
    CUSTOM_STAGES,
    PRECOMPUTE_SPLITS,
    STAGES,
    RunOptions,
    RunPaths,
    StageError,
    applicable_stages,
)
from skp_core import safetensors_io
from skp_core.atomic_files import atomic_write_text, replace_dir
from skp_core.attention_maps import AttentionMapper
from skp_core.backbone import Backbone, load_backbone
from skp_core.bundle import Bundle, save_bundle
from skp_core.checkpoint import has_checkpoint, load_checkpoint
from skp_core.config import MethodConfig
from skp_core.detector import KeypointDetector
from skp_core.metrics import DATASET_PROTOCOLS, DatasetProtocol, evaluate
from skp_core.optimize import OptimizationError, TokenOptimizer, resumable_settings
from skp_core.progress import progress as progress_bar
from skp_core.regression import apply_regressor, fit_regressor
from skp_core.select_tokens import select_best_tokens

__all__ = [
    "CUSTOM_STAGES",
    "STAGES",
    "RunOptions",
    "RunPaths",
    "StageError",
    "TrainingRun",
    "applicable_stages",
]

# ------------------------------------------------------------------------------------------
# Small file helpers: every write is atomic
# ------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    """Hash of a file's bytes (skp writes byte-stable files, safetensors included)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_tensor(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _key(data: Any) -> str:
    """Stable hash of a JSON-able description of a stage's inputs."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """safetensors file with JSON-encoded metadata values (the format only stores strings)."""
    strings = {k: json.dumps(v, allow_nan=False) for k, v in meta.items()}
    safetensors_io.save_file(path, tensors, metadata=strings)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        meta = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
    return tensors, meta


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: undefined numbers are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: seed numpy/random from torch's per-worker seed (reproducible)."""
    seed = torch.initial_seed() % 2**32
    # Datasets draw from their own seeded generators; this covers any library code in the
    # worker that uses numpy's global state.
    np.random.seed(seed)  # noqa: NPY002
    random.seed(seed)


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> HxWx3 uint8 (for drawing)."""
    array = image.detach().float().clamp(0, 1).mul(255).round().byte()
    return array.permute(1, 2, 0).cpu().numpy()


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


@dataclass
class StageRecord:
    """What happened to one stage in this invocation (for the summary)."""

    status: str  # "ran" or "skipped"
    seconds: float = 0.0
    note: str = ""


@dataclass
class RunResult:
    records: dict[str, StageRecord] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    bundle: Path | None = None
    report: Path | None = None
    skipped_images: int = 0


class TrainingRun:
    """Runs the requested stages on one run directory; rank 0 writes, others follow."""

    def __init__(
        self,
        options: RunOptions,
        config: MethodConfig,
        dist: Distributed | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        config.validate()
        self.opts = options
        self.cfg = config
        self.dist = dist or Distributed()
        self.paths = RunPaths(options.out)
        self.custom = options.dataset == "custom"
        self.protocol: DatasetProtocol | None = DATASET_PROTOCOLS.get(options.dataset)
        if not self.custom and self.protocol is None:
            raise StageError(f"dataset {options.dataset!r} has no evaluation protocol")
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._backbone: Backbone | None = None
        self._datasets: dict[tuple[str, bool], KeypointDataset] = {}
        self._warned: set[str] = set()
        self.result = RunResult()
        self._experiment: ExperimentLog | None = None

    # -- plumbing --------------------------------------------------------------------------
    @property
    def progress(self) -> bool:
        return self.opts.progress and self.dist.is_main

    def log(self, message: str) -> None:
        if self.dist.is_main:
            self._log(message)

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone(
                self.opts.model, device=self.opts.device, dtype=self.opts.dtype
            )
        return self._backbone

    @property
    def experiment(self) -> ExperimentLog:
        """The --log-to logger (rank 0 only; the others and no --log-to log nothing)."""
        if self._experiment is None:
            target = self.opts.log_to if self.dist.is_main else None
            self._experiment = ExperimentLog(target, self.paths.root / "logs", self.cfg.to_dict())
        return self._experiment

    def dataset(self, split: str, augment: bool = False) -> KeypointDataset:
        key = (split, augment)
        if key not in self._datasets:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = load_dataset(
                    self.opts.dataset,
                    self.opts.data_root,
                    split,
                    image_size=self.cfg.image_size,
                    seed=self.cfg.seed,
                    augment=augment,
                    allow_pickle=self.opts.allow_pickle,
                    validation=self.opts.validation,
                )
            for message in {str(w.message) for w in caught} - self._warned:
                self._warned.add(message)
                self.log(f"warning: {message}")
            skipped = len(getattr(ds, "skipped", []) or [])
            self.result.skipped_images = max(self.result.skipped_images, skipped)
            self._datasets[key] = ds
        return self._datasets[key]

    @contextlib.contextmanager
    def mapper(self) -> Iterator[AttentionMapper]:
        """The UNet holds one capture at a time: install it for one stage only."""
        mapper = AttentionMapper(
            self.backbone,
            layers=self.cfg.layers,
            feature_resolution=self.cfg.feature_resolution,
            image_size=self.cfg.image_size,
            max_batch=self.opts.batch_size,
        )
        try:
            yield mapper
        finally:
            mapper.remove()

    @contextlib.contextmanager
    def detector(self) -> Iterator[KeypointDetector]:
        """Inference exactly as the bundle will run it, with the protocol's read-out."""
        detector = KeypointDetector(
            self.backbone,
            self.bundle_object(with_results=False),
            num_views=self.cfg.num_views,
            include_identity=self.cfg.include_identity_view,
            view_space=self.cfg.view_space,
            max_batch=self.opts.batch_size,
            readout=self.cfg.max_loc_strategy,
            seed=self.cfg.seed,
        )
        try:
            yield detector
        finally:
            detector.close()

    def check_bundle(self, bundle: Bundle) -> None:
        """Build (and drop) the detector a bundle will get: what cannot run fails now."""
        KeypointDetector(
            self.backbone, bundle, num_views=self.cfg.num_views, view_space=self.cfg.view_space
        ).close()

    def read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.paths.state.read_text())
        except (OSError, ValueError):
            return {}

    def _set_unit(self, unit: str, entry: dict[str, Any]) -> None:
        """Replace one unit's entry in stages.json (rank 0 only)."""
        if not self.dist.is_main:
            return
        state = self.read_state()
        state[unit] = entry
        write_json(self.paths.state, state)

    def mark_done(self, unit: str, key: str, seconds: float, **extra: Any) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self._set_unit(unit, {"key": key, "seconds": round(seconds, 3), "finished": now, **extra})

    def mark_started(self, unit: str, key: str) -> None:
        """Claim a unit's outputs for `key` without recording it as done.

        No seconds, no finished time: a run killed meanwhile leaves a unit that never looks
        finished.
        """
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self._set_unit(unit, {"key": key, "started": now})

    def _recorded(self, unit: str, key: str, outputs: Sequence[Path]) -> bool:
        entry = self.read_state().get(unit)
        if not entry or "finished" not in entry or entry.get("key") != key:
            return False
        return all(p.exists() for p in outputs)

    def _require(self, path: Path, stage: str) -> Path:
        if not path.exists():
            raise StageError(
                f"{path} is missing: run the {stage} stage first (e.g. --stages {stage},...)"
            )
        return path

    # -- stage keys --------------------------------------------------------------------------
    def _method(self, *names: str) -> dict[str, Any]:
        data = self.cfg.to_dict()
        return {name: data[name] for name in names}

    def _checkpoint_context(self) -> torch.Tensor:
        self._require(self.paths.checkpoints / "checkpoint.json", "optimize")
        tensors, _ = load_checkpoint(self.paths.checkpoints)
        return tensors["context"]

    def _select_key(self) -> str:
        return _key(
            {
                "context": _sha256_tensor(self._checkpoint_context()),
                "method": self._method(
                    "selection_images",
                    "num_candidates",
                    "top_k",
                    "top_k_strategy",
                    "num_subjects",
                    "sigma",
                    "selection_sigma",
                    "image_size",
                    "feature_resolution",
                    "layers",
                    "seed",
                ),
                "batch_size": self.opts.batch_size,
                "dataset": self._data_identity(),
            }
        )

    def _precompute_key(self, split: str) -> str:
        return _key(
            {
                "context": _sha256_file(self._require(self.paths.context, "select")),
                "method": self._method(
                    "num_views",
                    "include_identity_view",
                    "view_space",
                    "max_loc_strategy",
                    "max_loc_distance",
                    "image_size",
                    "feature_resolution",
                    "layers",
                    "seed",
                    "rotation_deg",
                    "scale_min",
                    "scale_max",
                    "translation",
                ),
                "model": [self.opts.model, self.opts.dtype],
                "dataset": self._data_identity(split),
                "limit": self._limit(split),
            }
        )

    def _regress_key(self) -> str:
        source = self._require(self.paths.keypoints("regression"), "precompute")
        return _key({"keypoints": _sha256_file(source), "kind": self.protocol.regressor})

    def _evaluate_key(self) -> str:
        return _key(
            {
                "keypoints": _sha256_file(
                    self._require(self.paths.keypoints("test"), "precompute")
                ),
                "regressor": _sha256_file(self._require(self.paths.regressor, "regress")),
            }
        )

    def _optional_sha(self, path: Path) -> str | None:
        return _sha256_file(path) if path.exists() else None

    def _bundle_key(self) -> str:
        return _key(
            {
                "context": _sha256_file(self.paths.context),
                "regressor": self._optional_sha(self.paths.regressor),
                "metrics": self._optional_sha(self.paths.metrics),
                "method": self.cfg.to_dict(),
                "model": self.opts.model,
            }
        )

    def _report_key(self) -> str:
        files = [self.paths.context, self.paths.keypoints("test"), self.paths.regressor]
        files += [self.paths.metrics, self.paths.checkpoints / "checkpoint.json"]
        return _key(
            {
                "files": [self._optional_sha(p) for p in files],
                "method": self.cfg.to_dict(),
                "images": self.opts.report_images,
            }
        )

    def _limit(self, split: str) -> int | None:
        return self.opts.max_regression_images if split == "regression" else None

    # -- driver ----------------------------------------------------------------------------
    def run(self, stages: Sequence[str], force: Sequence[str] = ()) -> RunResult:
        """Run `stages` (pipeline order), skipping up-to-date ones unless in `force`."""
        forced = set(force)
        if self.dist.is_main:
            self.paths.root.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        try:
            for stage in STAGES:
                if stage not in stages:
                    continue
                if stage == "report":
                    self._maybe_write_bundle()
                start = time.perf_counter()
                ran = getattr(self, f"stage_{stage}")(stage in forced)
                elapsed = time.perf_counter() - start
                self.result.records[stage] = StageRecord(
                    "ran" if ran else "skipped", elapsed, "" if ran else "up to date"
                )
                self.dist.barrier()
        finally:
            if self._experiment is not None:
                self._experiment.close()
        if "report" not in stages:
            self._maybe_write_bundle()
        self.dist.barrier()
        if self.paths.metrics.exists():
            self.result.metrics = json.loads(self.paths.metrics.read_text())
        if (self.paths.bundle / "bundle.json").exists():
            self.result.bundle = self.paths.bundle
        if (self.paths.report / "index.html").exists():
            self.result.report = self.paths.report / "index.html"
        return self.result

    def _decide(self, compute: Callable[[], bool]) -> bool:
        """Rank 0 decides whether a stage is up to date; every rank follows that decision."""
        value = compute() if self.dist.is_main else None
        return bool(self.dist.broadcast(value))

    # -- optimize ------------------------------------------------------------------------------
    def _data_identity(self, *extra: str) -> list[Any]:
        """What the stage reads: dataset, root, split choice (and the split asked for)."""
        root = str(Path(self.opts.data_root).resolve())
        return [self.opts.dataset, root, *extra] + (["validation"] if self.opts.validation else [])

    def _optimize_identity(self) -> str:
        identity: dict[str, Any] = {"dataset": self.opts.dataset}
        if self.opts.validation or self.opts.max_len is not None:  # older runs keep their key
            identity.update(validation=self.opts.validation, max_len=self.opts.max_len)
        return _key(identity)

    def _optimize_done(self) -> bool:
        if not has_checkpoint(self.paths.checkpoints):
            return False
        recorded = (self.read_state().get("optimize") or {}).get("key")
        if recorded not in (None, self._optimize_identity()):
            raise StageError(
                f"{self.paths.checkpoints} holds an optimization of another dataset; use a "
                "new --out directory or pass --force optimize to start over"
            )
        _, meta = load_checkpoint(self.paths.checkpoints)
        same = resumable_settings(meta.get("config", {})) == resumable_settings(self.cfg)
        return same and int(meta.get("step", 0)) >= self.cfg.steps

    def optimize_pending(self) -> bool:
        """Whether the optimize stage has steps left to run (every rank gets rank 0's answer)."""
        return not self._decide(self._optimize_done)

    def stage_optimize(self, force: bool) -> bool:
        if force:
            if self.dist.is_main:
                shutil.rmtree(self.paths.checkpoints, ignore_errors=True)
            self.dist.barrier()
        elif self._decide(self._optimize_done):
            return False
        start = time.perf_counter()
        self.mark_started("optimize", self._optimize_identity())  # claims the checkpoints
        images = self.dataset("train", augment=self.opts.augment)
        if self.opts.max_len is not None and self.opts.max_len < len(images):
            # The reference's --max_len: the first N training images (selection sees all).
            images = torch.utils.data.Subset(images, range(self.opts.max_len))
        self.log(f"optimize: {len(images)} training images, {self.cfg.steps} steps")
        resumed_at: int | None = None
        with self.mapper() as mapper:
            optimizer = TokenOptimizer(
                mapper,
                images,
                self.cfg,
                checkpoint_dir=self.paths.checkpoints,
                checkpoint_every=self.opts.checkpoint_every,
                progress=self.progress,
                shard=self.dist.shard(),
            )
            try:
                if optimizer.try_resume():
                    resumed_at = optimizer.step
                    self.log(f"optimize: {optimizer.resume_message()}")
                log = self.experiment
                optimizer.run(
                    on_step=(lambda r: log.scalars("optimize", r, int(r["step"])))
                    if log.enabled
                    else None
                )
            except OptimizationError as error:
                if "other settings" in str(error):
                    raise OptimizationError(
                        f"{error}; or pass --force optimize to start over"
                    ) from error
                raise
        elapsed = time.perf_counter() - start
        self.mark_done("optimize", self._optimize_identity(), elapsed, resumed_at_step=resumed_at)
        return True

    # -- select ----------------------------------------------------------------------------
    def stage_select(self, force: bool) -> bool:
        if not self.dist.is_main:  # one pass per image, done once: the others wait
            return True
        key = self._select_key()
        outputs = [self.paths.context, self.paths.selection]
        if not force and self._recorded("select", key, outputs):
            return False
        start = time.perf_counter()
        tensors, meta = load_checkpoint(self.paths.checkpoints)
        context = tensors["context"]
        images = self.dataset("train", augment=False)
        with self.mapper() as mapper:
            selected, counts = select_best_tokens(
                mapper,
                images,
                context.to(self.backbone.device),
                num_images=self.cfg.selection_images,
                num_candidates=self.cfg.num_candidates,
                top_k=self.cfg.top_k,
                sigma=self.cfg.sigma
                if self.cfg.selection_sigma is None
                else self.cfg.selection_sigma,
                batch_size=self.opts.batch_size,
                seed=self.cfg.seed,
                progress=self.progress,
                top_k_strategy=self.cfg.top_k_strategy,
                num_subjects=self.cfg.num_subjects,
            )
        backbone = {"model": self.opts.model, "fingerprint": self.backbone.fingerprint}
        self._write_context(context, selected, counts, {"source": "optimize", "backbone": backbone})
        self.experiment.selection_counts(counts, selected, self.cfg.steps)
        write_json(
            self.paths.selection,
            {
                "selected_indices": [int(i) for i in selected],
                "counts": [int(c) for c in counts],
                "num_images": min(self.cfg.selection_images, len(images)),
                "optimizer_steps": int(meta["step"]),
                "source": "optimize",
            },
        )
        self.mark_done("select", key, time.perf_counter() - start)
        return True

    def _write_context(
        self,
        context: torch.Tensor,
        selected: torch.Tensor,
        counts: torch.Tensor,
        meta: dict[str, Any],
    ) -> None:
        save_tensors(
            self.paths.context,
            {
                "context": context.float(),
                "selected_indices": selected.long(),
                "counts": counts.long(),
            },
            meta,
        )

    def import_bundle(self, bundle: Bundle, source: Path, keep_regressor: bool) -> None:
        """Use an existing bundle's tokens (and regressor) instead of optimize + select."""
        if not self.dist.is_main:
            return
        self.paths.root.mkdir(parents=True, exist_ok=True)
        counts = torch.zeros(bundle.num_tokens, dtype=torch.long)
        meta = {"source": f"bundle {source}", "backbone": bundle.backbone}
        self._write_context(bundle.context, bundle.selected_indices, counts, meta)
        write_json(
            self.paths.selection,
            {
                "selected_indices": [int(i) for i in bundle.selected_indices],
                "source": f"bundle {source}",
            },
        )
        if keep_regressor and bundle.regressor is not None:
            info = {"kind": "bundle", "source": str(source)}
            save_tensors(
                self.paths.regressor, {"weights": bundle.regressor.float()}, {"info": info}
            )

    def selection(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Context, selected token indices and the backbone they were made for."""
        tensors, meta = load_tensors(self._require(self.paths.context, "select"))
        return tensors["context"], tensors["selected_indices"], meta.get("backbone") or {}

    # -- precompute ------------------------------------------------------------------------
    def stage_precompute(self, force: bool) -> bool:
        todo = []
        for split in PRECOMPUTE_SPLITS:
            key = self._precompute_key(split) if self.dist.is_main else ""
            unit = f"precompute:{split}"
            output = [self.paths.keypoints(split)]
            if force or not self._decide(lambda u=unit, k=key, o=output: self._recorded(u, k, o)):
                todo.append((split, key))
        if not todo:
            return False
        with self.detector() as detector:
            for split, key in todo:
                start = time.perf_counter()
                self._precompute_split(detector, split, key)
                self.mark_done(f"precompute:{split}", key, time.perf_counter() - start)
                self.dist.barrier()
        return True

    def _precompute_split(self, detector: KeypointDetector, split: str, key: str) -> None:
        """Discovered keypoints of every image of a split, in resumable chunks.

        The split is cut into chunks of `precompute_chunk` images; each round every rank
        computes one chunk, rank 0 gathers and writes them (atomically) under
        precompute_parts/, so a crash loses at most one round. A rerun with the same key
        computes only the missing chunks; the last step joins them into keypoints_{split}.
        """
        ds = self.dataset(split)
        count = len(ds) if self._limit(split) is None else min(len(ds), self._limit(split))
        size = self.opts.precompute_chunk
        chunks = [(start, min(start + size, count)) for start in range(0, count, size)]
        parts = self.paths.root / "precompute_parts" / f"{split}-{key[:16]}"
        done: list[int] = []
        if self.dist.is_main:
            for stale in parts.parent.glob(f"{split}-*"):
                if stale != parts:  # made with other inputs: useless now
                    shutil.rmtree(stale, ignore_errors=True)
            parts.mkdir(parents=True, exist_ok=True)
            done = sorted(int(p.stem.split("-")[1]) for p in parts.glob("chunk-*.safetensors"))
        done = self.dist.broadcast(done)
        if done:
            self.log(f"precompute {split}: resuming, {len(done)} of {len(chunks)} chunks done")
        todo = [chunk for chunk in chunks if chunk[0] not in set(done)]
        mine = todo[self.dist.rank :: self.dist.world_size]
        rounds = math.ceil(len(todo) / self.dist.world_size)
        per_batch = max(1, self.opts.batch_size // self.cfg.num_views)
        batches = [
            list(range(first, min(first + per_batch, stop)))
            for start, stop in mine
            for first in range(start, stop, per_batch)
        ]
        loader = DataLoader(
            ds,
            batch_sampler=batches,
            num_workers=self.opts.num_workers if batches else 0,
            worker_init_fn=_seed_worker,
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        batch_iter = iter(loader)
        total = sum(stop - start for start, stop in mine)
        with progress_bar(
            total=total, desc=f"precompute {split}", unit="img", disable=not self.progress
        ) as bar:
            for index in range(rounds):
                chunk = mine[index] if index < len(mine) else None
                rows = None
                if chunk is not None:
                    rows = self._keypoint_rows(detector, batch_iter, chunk[1] - chunk[0])
                    bar.update(chunk[1] - chunk[0])
                for computed, result in self.dist.gather((chunk, rows)):
                    if self.dist.is_main and computed is not None:
                        self._save_rows(parts / f"chunk-{computed[0]:09d}.safetensors", result)
        if self.dist.is_main:
            joined = [load_tensors(parts / f"chunk-{start:09d}.safetensors") for start, _ in chunks]
            names = ("keypoints", "annotations", "visibility", "indices")
            tensors = {
                name: torch.cat([t[name] for t, _ in joined])
                if joined
                else self._empty_rows(detector, ds)[name]
                for name in names
            }
            paths = [path for _, meta in joined for path in meta["paths"]]
            meta = {
                "dataset": self.opts.dataset,
                "split": split,
                "paths": paths,
                "landmark_names": list(ds.landmark_names),
            }
            save_tensors(self.paths.keypoints(split), tensors, meta)
            shutil.rmtree(parts, ignore_errors=True)
            with contextlib.suppress(OSError):  # only when no other split's parts remain
                parts.parent.rmdir()

    @staticmethod
    def _empty_rows(detector: KeypointDetector, ds: KeypointDataset) -> dict[str, torch.Tensor]:
        joints = len(ds.landmark_names)
        return {
            "keypoints": torch.zeros(0, detector.num_keypoints, 2),
            "annotations": torch.zeros(0, joints, 2),
            "visibility": torch.zeros(0, joints),
            "indices": torch.zeros(0, dtype=torch.long),
        }

    @staticmethod
    def _keypoint_rows(
        detector: KeypointDetector, batches: Iterator[dict[str, Any]], count: int
    ) -> dict[str, Any]:
        """Keypoints (the protocol's read-out, max_loc_strategy) of the next `count` images."""
        out: dict[str, list[Any]] = {k: [] for k in ("keypoints", "annotations", "visibility")}
        out.update(indices=[], paths=[])
        while len(out["paths"]) < count:
            batch = next(batches)
            locations, _ = detector.read(detector.keypoint_maps(batch["image"]))
            out["keypoints"].append(locations.float().cpu())
            out["annotations"].append(batch["keypoints"].float())
            out["visibility"].append(batch["visibility"].float())
            out["indices"].append(batch["index"].long())
            out["paths"].extend(str(p) for p in batch["path"])
        rows: dict[str, Any] = {k: torch.cat(v) for k, v in out.items() if k != "paths"}
        rows["paths"] = out["paths"]
        return rows

    @staticmethod
    def _save_rows(path: Path, rows: dict[str, Any]) -> None:
        tensors = {k: v for k, v in rows.items() if k != "paths"}
        save_tensors(path, tensors, {"paths": rows["paths"]})

    # -- regress -----------------------------------------------------------------------------
    def stage_regress(self, force: bool) -> bool:
        if not self.dist.is_main:  # seconds of numpy: rank 0 alone
            return True
        key = self._regress_key()
        if not force and self._recorded("regress", key, [self.paths.regressor]):
            return False
        start = time.perf_counter()
        tensors, meta = load_tensors(self.paths.keypoints("regression"))
        if tensors["keypoints"].shape[0] == 0:
            raise StageError("the regression split has no images: nothing to fit")
        weights, info = fit_regressor(
            self.protocol.regressor,
            tensors["keypoints"].double().numpy(),
            tensors["annotations"].double().numpy(),
            tensors["visibility"].double().numpy(),
        )
        if not np.isfinite(weights).all():
            raise StageError("the fitted regressor is not finite (degenerate keypoints?)")
        info["landmark_names"] = meta.get("landmark_names", [])
        save_tensors(
            self.paths.regressor,
            {"weights": torch.from_numpy(weights).float()},
            {"info": info},
        )
        self.mark_done("regress", key, time.perf_counter() - start)
        self.log(f"regress: {info['kind']} regressor fitted on {info['num_samples']} images")
        return True

    # -- evaluate ----------------------------------------------------------------------------
    def stage_evaluate(self, force: bool) -> bool:
        if not self.dist.is_main:
            return True
        key = self._evaluate_key()
        outputs = [self.paths.metrics, self.paths.per_image_errors]
        if not force and self._recorded("evaluate", key, outputs):
            return False
        start = time.perf_counter()
        regressor, reg_meta = load_tensors(self.paths.regressor)
        tensors, meta = load_tensors(self.paths.keypoints("test"))
        weights = regressor["weights"].double().numpy()
        discovered = tensors["keypoints"].double().numpy()
        if discovered.shape[0] == 0:
            raise StageError("the test split has no images: nothing to evaluate")
        predicted = apply_regressor(weights, discovered)
        scores = evaluate(
            self.opts.dataset,
            predicted,
            tensors["annotations"].double().numpy(),
            tensors["visibility"].double().numpy(),
        )
        per_image = scores.pop("per_image")
        metrics = {k: _finite_or_none(v) for k, v in scores.items()}
        info = {k: v for k, v in reg_meta.get("info", {}).items() if k != "landmark_names"}
        metrics.update(
            readout=self.cfg.max_loc_strategy,
            num_keypoints=int(discovered.shape[1]),
            num_views=self.cfg.num_views,
            regressor=info,
        )
        write_json(self.paths.metrics, metrics)
        self.experiment.scalars("metrics", metrics, self.cfg.steps)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["index", "path", scores["metric"]])
        for index, path, value in zip(
            tensors["indices"].tolist(), meta["paths"], per_image.tolist(), strict=True
        ):
            writer.writerow([index, path, "" if not math.isfinite(value) else repr(value)])
        atomic_write_text(self.paths.per_image_errors, buffer.getvalue())
        self.mark_done("evaluate", key, time.perf_counter() - start)
        return True

    # -- bundle ------------------------------------------------------------------------------
    def bundle_object(self, with_results: bool = True) -> Bundle:
        """The skp_core bundle of this run: tokens, and when fitted, regressor and metrics."""
        context, selected, backbone = self.selection()
        regressor = None
        landmark_names = None
        metrics = None
        if with_results and self.paths.regressor.exists():
            tensors, meta = load_tensors(self.paths.regressor)
            regressor = tensors["weights"].float()
            names = list(meta.get("info", {}).get("landmark_names") or [])
            count = regressor.shape[1] // 2
            valid = len(names) == count and len(set(names)) == count and all(names)
            landmark_names = names if valid else [f"landmark{j}" for j in range(count)]
        if with_results and self.paths.metrics.exists():
            metrics = json.loads(self.paths.metrics.read_text())
        training: dict[str, Any] = {"dataset": self.opts.dataset}
        if has_checkpoint(self.paths.checkpoints):
            _, meta = load_checkpoint(self.paths.checkpoints)
            history = meta.get("history") or []
            training.update(
                steps_done=int(meta.get("step", 0)),
                final_loss=_finite_or_none(history[-1]["loss"]) if history else None,
                world_size=self.dist.world_size,
                checkpoint_every=self.opts.checkpoint_every,
                augment=self.opts.augment,
            )
        return Bundle(
            context=context.float(),
            selected_indices=selected.long(),
            regressor=regressor,
            landmark_names=landmark_names,
            backbone=backbone,
            method=self.cfg.to_dict(),
            training=training,
            dataset={
                "name": self.opts.dataset,
                "root": str(Path(self.opts.data_root).resolve()),
                "max_regression_images": self.opts.max_regression_images,
            },
            metrics=metrics,
        )

    def _maybe_write_bundle(self) -> None:
        if not self.dist.is_main or not self.paths.context.exists():
            return
        key = self._bundle_key()
        if self._recorded("bundle", key, [self.paths.bundle / "bundle.json"]):
            return
        start = time.perf_counter()
        save_bundle(self.bundle_object(), self.paths.bundle)
        self.mark_done("bundle", key, time.perf_counter() - start)

    # -- report ------------------------------------------------------------------------------
    def stage_report(self, force: bool) -> bool:
        if not self.dist.is_main:
            return True
        self._require(self.paths.context, "select")
        key = self._report_key()
        if not force and self._recorded("report", key, [self.paths.report / "index.html"]):
            return False
        from offline_tools import report  # matplotlib: only imported when a report is drawn

        start = time.perf_counter()
        content = self._report_content()
        replace_dir(self.paths.report, lambda folder: report.write_report(folder, content))
        self.mark_done("report", key, time.perf_counter() - start)
        return True

    def _report_content(self) -> dict[str, Any]:
        """Everything the report draws, gathered from the run's files (+ maps of a few images)."""
        bundle = self.bundle_object(with_results=False)
        split = "train" if self.custom else "test"
        ds = self.dataset(split)
        count = min(self.opts.report_images, len(ds))
        items = [ds[i] for i in range(count)]
        batch = torch.stack([item["image"] for item in items])
        keypoints_file = self.paths.keypoints("test")
        stored = None
        if not self.custom and keypoints_file.exists():
            tensors, _ = load_tensors(keypoints_file)
            if tensors["keypoints"].shape[0] >= count:
                stored = tensors["keypoints"][:count].double().numpy()
        with self.detector() as detector:
            maps = detector.keypoint_maps(batch[: min(3, count)]) if count else None
            if stored is None and count:
                located, _ = detector.read(detector.keypoint_maps(batch))
                stored = located.double().cpu().numpy()
        weights = None
        if self.paths.regressor.exists():
            weights = load_tensors(self.paths.regressor)[0]["weights"].double().numpy()
        samples = []
        for i, item in enumerate(items):
            sample: dict[str, Any] = {
                "image": image_to_uint8(item["image"]),
                "original_size": tuple(int(v) for v in item["original_size"]),
                "keypoints": stored[i],
                "title": Path(str(item["path"])).name,
            }
            if "keypoints" in item:
                sample["ground_truth"] = item["keypoints"].double().numpy()
                sample["visibility"] = item["visibility"].double().numpy()
            if weights is not None:
                sample["landmarks"] = apply_regressor(weights, stored[i][None])[0]
            samples.append(sample)
        history: list[dict[str, float]] = []
        if has_checkpoint(self.paths.checkpoints):
            history = list(load_checkpoint(self.paths.checkpoints)[1].get("history") or [])
        per_image: list[float] = []
        if self.paths.per_image_errors.exists():
            with open(self.paths.per_image_errors, newline="") as handle:
                per_image = [float(r[2]) for r in list(csv.reader(handle))[1:] if r[2] != ""]
        metrics = (
            json.loads(self.paths.metrics.read_text()) if self.paths.metrics.exists() else None
        )
        return {
            "dataset": self.opts.dataset,
            "model": self.opts.model,
            "keypoint_names": bundle.keypoint_names,
            "keypoint_colors": bundle.keypoint_colors,
            "samples": samples,
            "map_samples": samples[: 0 if maps is None else len(maps)],
            "maps": None if maps is None else maps.float().cpu().numpy(),
            "history": history,
            "metrics": metrics,
            "per_image": per_image,
            "published": None if self.protocol is None else self.protocol.published,
            "config": self.cfg.to_dict(),
            "stage_seconds": {
                k: v.get("seconds")
                for k, v in self.read_state().items()
                if isinstance(v, dict) and "finished" in v
            },
            "resumed_at_step": (self.read_state().get("optimize") or {}).get("resumed_at_step"),
            "skipped_images": self.result.skipped_images,
        }
