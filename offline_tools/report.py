"""The visual report of a training run: PNG figures plus index.html and report.md.

Why: a number alone does not say whether the keypoints are sensible. The report shows the
discovered keypoints and the regressed landmarks against the annotations on test images, the
selected tokens' attention maps, the loss curves, and the metric beside the paper's number.
Keypoints are drawn with skp_core.overlay, the same code the robot's debug image uses; plots
use matplotlib's object API (no pyplot global state, no display needed).

Input is the plain dict `TrainingRun._report_content` gathers; nothing here computes method
results, it only draws them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skp_core.detector import normalized_to_pixels
from skp_core.overlay import blend_heatmap, combine_maps, render_overlay

__all__ = ["write_report"]

GT_COLOR = "#00e000"
PRED_COLOR = "#ff2020"


def _rgb(color: Sequence[int]) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in color)  # type: ignore[return-value]


def _pixels(points: np.ndarray, image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return normalized_to_pixels(np.asarray(points, dtype=np.float64), height, width)


def at_original_aspect(image: np.ndarray, original_size: Sequence[int] | None) -> np.ndarray:
    """The method's square input stretched back to the photo's own aspect ratio.

    The method squashes every image to a square; drawn that way, a landscape photo looks
    wrong. Normalized keypoints are fractions of width and height, so they land on the same
    content in the stretched image. The longer side keeps the square's size.
    """
    if original_size is None:
        return image
    height, width = (int(v) for v in original_size)
    side = image.shape[0]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (image.shape[1], image.shape[0]):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _grid(count: int, columns: int) -> tuple[int, int]:
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def keypoint_figure(content: dict[str, Any], path: Path) -> Figure:
    """Sample images: discovered keypoints (discs), regressed landmarks (+) vs annotations (x)."""
    samples = content["samples"]
    rows, cols = _grid(len(samples), 3)
    fig = Figure(figsize=(3.6 * cols, 3.8 * rows + 0.6), layout="constrained")
    colors = content["keypoint_colors"]
    names = content["keypoint_names"]
    for i, sample in enumerate(samples):
        ax = fig.add_subplot(rows, cols, i + 1)
        image = at_original_aspect(sample["image"], sample.get("original_size"))
        uv = _pixels(sample["keypoints"], image)
        ax.imshow(render_overlay(image, uv, colors[: len(uv)]))
        ground_truth = sample.get("ground_truth")
        landmarks = sample.get("landmarks")
        visible = sample.get("visibility")
        if ground_truth is not None:
            mask = np.ones(len(ground_truth), bool) if visible is None else visible > 0
            gt = _pixels(ground_truth, image)[mask]
            ax.scatter(gt[:, 0], gt[:, 1], marker="x", s=28, c=GT_COLOR, linewidths=1.5)
            if landmarks is not None:
                pred = _pixels(landmarks, image)[mask]
                for (x0, y0), (x1, y1) in zip(gt, pred, strict=True):
                    ax.plot([x0, x1], [y0, y1], color="yellow", linewidth=0.8, alpha=0.8)
        if landmarks is not None:
            pred = _pixels(landmarks, image)
            ax.scatter(pred[:, 0], pred[:, 1], marker="+", s=40, c=PRED_COLOR, linewidths=1.5)
        ax.set_title(sample["title"], fontsize=8)
        ax.set_axis_off()
    handles = [
        Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor=_rgb(color),
               markeredgecolor="white", label=name)
        for name, color in zip(names, colors, strict=False)
    ]  # fmt: skip
    if any(s.get("landmarks") is not None for s in samples):
        handles.append(_marker_handle("+", PRED_COLOR, "regressed landmark"))
    if any(s.get("ground_truth") is not None for s in samples):
        handles.append(_marker_handle("x", GT_COLOR, "annotation (yellow line: error)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
    fig.suptitle(
        "each selected token's keypoint (argmax of its view-averaged attention map), "
        "one colour per token",
        fontsize=9,
    )
    fig.savefig(path, dpi=110)
    return fig


def _marker_handle(marker: str, color: str, label: str) -> Line2D:
    return Line2D(
        [], [], marker=marker, linestyle="", markersize=7, markeredgecolor=color,
        markeredgewidth=1.5, label=label,
    )  # fmt: skip


def attention_figure(content: dict[str, Any], path: Path) -> None:
    """Per image: all selected maps combined, then each selected token's map."""
    maps = content["maps"]
    images = [
        at_original_aspect(s["image"], s.get("original_size")) for s in content["map_samples"]
    ]
    names = content["keypoint_names"]
    colors = content["keypoint_colors"]
    count, k = maps.shape[0], maps.shape[1]
    fig = Figure(figsize=(1.7 * (k + 1), 1.9 * count), layout="constrained")
    for row in range(count):
        image = images[row]
        cells = [("all", combine_maps(maps[row]), (0, 0, 0))]
        cells += [(names[j], combine_maps(maps[row, j]), colors[j]) for j in range(k)]
        for col, (title, heat, color) in enumerate(cells):
            ax = fig.add_subplot(count, k + 1, row * (k + 1) + col + 1)
            ax.imshow(blend_heatmap(image, heat))
            if row == 0:
                ax.set_title(title, fontsize=8, color=_rgb(color))
            ax.set_axis_off()
    fig.suptitle("view-averaged attention maps of the selected tokens", fontsize=9)
    fig.savefig(path, dpi=100)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if len(values) < width or width < 2:
        return values
    kernel = np.ones(width) / width
    return np.convolve(values, kernel, mode="valid")


def loss_figure(history: list[dict[str, float]], path: Path) -> None:
    """Total loss and its two unweighted terms per optimizer step (raw and smoothed)."""
    steps = np.array([h["step"] for h in history], dtype=np.float64)
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    width = max(1, len(history) // 20)
    for i, (key, title) in enumerate(
        (
            ("loss", "total loss"),
            ("equivariance", "equivariance (unweighted)"),
            ("localization", "localization (unweighted)"),
        )
    ):
        ax = fig.add_subplot(1, 3, i + 1)
        values = np.array([h[key] for h in history], dtype=np.float64)
        ax.plot(steps, values, color="#9ab", linewidth=0.8, label="per step")
        smooth = _smooth(values, width)
        if len(smooth) != len(values):
            ax.plot(steps[width - 1 :], smooth, color="#135", label=f"mean of {width}")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if values.size and np.all(values > 0):
            ax.set_yscale("log")
    fig.savefig(path, dpi=100)


def metric_figure(metrics: dict[str, Any], published: float | None, path: Path) -> None:
    """This run's metric next to the paper's number (the paper used real SD 1.5 weights)."""
    labels = ["this run"]
    values = [metrics.get("mean") if metrics.get("mean") is not None else float("nan")]
    if published is not None:
        labels.append("paper")
        values.append(published)
    fig = Figure(figsize=(4, 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(labels, values, color=["#1f77b4", "#aaaaaa"][: len(values)])
    for bar, value in zip(bars, values, strict=True):
        text = "n/a" if not math.isfinite(value) else f"{value:.4g}"
        height = bar.get_height() if math.isfinite(bar.get_height()) else 0
        ax.text(bar.get_x() + bar.get_width() / 2, height, text, ha="center", va="bottom")
    direction = "lower" if metrics.get("lower_is_better", True) else "higher"
    ax.set_title(f"{metrics.get('metric')} ({direction} is better)", fontsize=9)
    ax.set_ylabel(str(metrics.get("units", "")), fontsize=7)
    fig.savefig(path, dpi=100)


def error_figure(errors: Sequence[float], metric: str, path: Path) -> None:
    """Distribution of the per-image metric over the test images."""
    fig = Figure(figsize=(4.5, 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(np.asarray(errors, dtype=np.float64), bins=min(40, max(5, len(errors) // 5)))
    ax.set_title(f"per-image {metric} ({len(errors)} test images)", fontsize=9)
    ax.set_xlabel(metric, fontsize=8)
    fig.savefig(path, dpi=100)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return str(value)


def _summary_rows(content: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("dataset", content["dataset"]), ("model", content["model"])]
    metrics = content.get("metrics")
    if metrics:
        direction = "lower" if metrics.get("lower_is_better", True) else "higher"
        rows += [
            ("metric", f"{metrics.get('metric')} ({direction} is better)"),
            ("this run", f"{_fmt(metrics.get('mean'))} {metrics.get('units', '')}"),
            ("paper", _fmt(content.get("published"))),
            ("test images", f"{metrics.get('num_valid')} scored of {metrics.get('num_images')}"),
        ]
    if content.get("skipped_images"):
        rows.append(("unreadable images skipped", str(content["skipped_images"])))
    if content.get("resumed_at_step") is not None:
        rows.append(("optimization", f"resumed at step {content['resumed_at_step']}"))
    rows.append(("keypoints", ", ".join(content["keypoint_names"])))
    for stage, seconds in content.get("stage_seconds", {}).items():
        if seconds is not None:
            rows.append((f"time: {stage}", f"{seconds:.1f} s"))
    return rows


def write_report(folder: Path, content: dict[str, Any]) -> list[Path]:
    """Draw every figure the content allows into `folder`; write index.html and report.md."""
    folder = Path(folder)
    figures: list[tuple[str, str]] = []
    if content["samples"]:
        keypoint_figure(content, folder / "keypoints.png")
        figures.append(("keypoints.png", "Keypoints on sample images"))
    if content.get("maps") is not None and len(content["maps"]):
        attention_figure(content, folder / "attention_maps.png")
        figures.append(("attention_maps.png", "Attention maps of the selected tokens"))
    if content.get("history"):
        loss_figure(content["history"], folder / "loss.png")
        figures.append(("loss.png", "Optimization losses"))
    metrics = content.get("metrics")
    if metrics:
        metric_figure(metrics, content.get("published"), folder / "metric.png")
        figures.append(("metric.png", "Metric vs the paper"))
    if metrics and content.get("per_image"):
        error_figure(content["per_image"], str(metrics.get("metric")), folder / "errors.png")
        figures.append(("errors.png", "Per-image errors"))

    rows = _summary_rows(content)
    config_rows = [(k, str(v)) for k, v in content.get("config", {}).items()]
    title = f"skp-train report: {content['dataset']}"
    table = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    config = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in config_rows
    )
    images = "\n".join(
        f'<h2>{html.escape(caption)}</h2>\n<img src="{name}" alt="{html.escape(caption)}">'
        for name, caption in figures
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto}}
th{{text-align:left;padding-right:1em}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table>{table}</table>
{images}
<h2>Method settings</h2><table>{config}</table>
</body></html>
"""
    (folder / "index.html").write_text(page)
    markdown = [f"# {title}", "", "| | |", "|---|---|"]
    markdown += [f"| {k} | {v} |" for k, v in rows]
    for name, caption in figures:
        markdown += ["", f"## {caption}", "", f"![{caption}]({name})"]
    markdown += ["", "## Method settings", "", "| | |", "|---|---|"]
    markdown += [f"| {k} | {v} |" for k, v in config_rows]
    (folder / "report.md").write_text("\n".join(markdown) + "\n")
    return [folder / name for name, _ in figures]
