"""`skp-bench`: speed and memory of inference and optimization next to the bare model's cost.

The bare cost is what any implementation must pay: a batched VAE encode plus the UNet up to
the last captured layer (forward, or forward + backward to the context). The ratio of our
figures to it is the overhead of capture, map computation, augmentation, losses and read-out.
Ours and the bare model are timed in interleaved pairs (ours, bare, ours, bare, ...) and each
figure is the median over pairs, the ratio the median of per-pair ratios, so load on the
machine moves both sides alike. Figures are printed (and written with --json), never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from skp_core.benchmark_memory import PeakMemory

#: Goal ratios of the speed issue, per built-in model (real SD 1.x checkpoints: sd15-random's).
TARGETS: dict[str, dict[str, float]] = {
    "sd15-random": {"inference_10v": 1.3, "optimize_step": 1.5, "optimize_step_memory": 2.0},
    "sd15-narrow": {"inference_10v": 2.9, "optimize_step": 7.0},
}
_BUILT_IN = ("tiny", "sd15-random", "sd15-narrow")


def targets_for(model: str) -> dict[str, float]:
    """Goal ratios for a model name; none for tiny (too small to be dominated by anything)."""
    if model in TARGETS:
        return TARGETS[model]
    return {} if model in _BUILT_IN else TARGETS["sd15-random"]


class _Stop(Exception):
    pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def paired(
    ours: Callable[[], object],
    bare: Callable[[], object],
    device: torch.device,
    repeat: int,
) -> dict[str, float]:
    """Interleaved timings after one warm-up of each (which also measures peak memory)."""
    with PeakMemory(device) as ours_memory:
        ours()
        _sync(device)
    with PeakMemory(device) as bare_memory:
        bare()
        _sync(device)
    ours_times, bare_times = [], []
    for _ in range(repeat):
        ours_times.append(_timed(ours, device))
        bare_times.append(_timed(bare, device))
    ratios = [o / b for o, b in zip(ours_times, bare_times, strict=True)]
    return {
        "ours_s": statistics.median(ours_times),
        "bare_s": statistics.median(bare_times),
        "ratio": statistics.median(ratios),
        "ours_peak_mib": ours_memory.peak_mib,
        "bare_peak_mib": bare_memory.peak_mib,
        "memory_ratio": ours_memory.peak_mib / max(bare_memory.peak_mib, 1e-9),
        "ours_times": ours_times,
        "bare_times": bare_times,
    }


def bare_partial_unet(backbone: Any, last_layer: str) -> Callable[..., torch.Tensor | None]:
    """UNet forward with diffusers' own processors, stopped after `last_layer` (no capture)."""
    from skp_core.attention_capture import processor_key

    module = backbone.unet.get_submodule(processor_key(last_layer).removesuffix(".processor"))

    def run(z_t: torch.Tensor, context: torch.Tensor) -> torch.Tensor | None:
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output)
            raise _Stop

        handle = module.register_forward_hook(hook)
        try:
            hidden = context.unsqueeze(0).expand(z_t.shape[0], -1, -1)
            backbone.unet(z_t, 0, encoder_hidden_states=hidden, return_dict=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured[0] if captured else None

    return run


def _map_dtype(name: str | None) -> torch.dtype | None:
    return {None: None, "float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the table, as a JSON-able dict."""
    from skp_core.attention_maps import AttentionMapper
    from skp_core.backbone import load_backbone
    from skp_core.bundle import Bundle
    from skp_core.config import default_config
    from skp_core.detector import KeypointDetector
    from skp_core.latents import noise_latents_t0
    from skp_core.optimize import TokenOptimizer

    backbone = load_backbone(args.model, device=args.device, dtype=args.dtype)
    device = backbone.device
    cfg = default_config(args.model).with_overrides(
        image_size=args.image_size,
        feature_resolution=args.feature_resolution,
        num_tokens=args.num_tokens,
        images_per_step=args.images_per_step,
    )
    gen = torch.Generator().manual_seed(0)
    context = torch.randn(cfg.num_tokens, backbone.context_dim, generator=gen).to(device)
    size = cfg.image_size
    partial = bare_partial_unet(backbone, cfg.layers[-1])
    vae = backbone.vae
    map_dtype = _map_dtype(args.map_dtype)
    rows: list[dict[str, Any]] = []
    targets = targets_for(args.model)

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = x.to(device=device, dtype=backbone.dtype) * 2 - 1
            return vae.encode(x).latent_dist.mean * vae.config.scaling_factor

    bundle = Bundle(
        context=context.float().cpu(),
        selected_indices=torch.arange(cfg.top_k),
        backbone={"model": args.model, "fingerprint": backbone.fingerprint},
        method=cfg.to_dict(),
    )
    image = torch.rand(1, 3, size, size, generator=gen)
    spaces = ["image"] + (["latent"] if args.latent_views else [])
    for views in args.views:
        batch = torch.rand(views, 3, size, size, generator=gen)

        def bare_inference(batch: torch.Tensor = batch) -> None:
            with torch.no_grad():
                z = noise_latents_t0(encode(batch).float(), gen).to(backbone.dtype)
                partial(z, context.to(backbone.dtype))

        for space in spaces:
            detector = KeypointDetector(
                backbone,
                bundle,
                num_views=views,
                max_batch=args.max_batch,
                view_space=space,
                map_dtype=map_dtype,
            )
            try:
                figures = paired(
                    lambda d=detector: d.keypoint_maps(image), bare_inference, device, args.repeat
                )
            finally:
                detector.close()
            suffix = "" if space == "image" else ", latent views"
            key = f"inference_{views}v" + ("" if space == "image" else "_latent")
            rows.append(
                {
                    "key": key,
                    "measure": f"inference, {views} view(s){suffix}, ms/image",
                    "unit": "ms",
                    **figures,
                    "target": targets.get(key),
                }
            )
        if args.latent_views:
            rows[-1]["speedup_vs_image_views"] = rows[-2]["ours_s"] / rows[-1]["ours_s"]

    images = [torch.rand(3, size, size, generator=gen) for _ in range(cfg.images_per_step)]
    mapper = AttentionMapper(
        backbone, cfg.layers, cfg.feature_resolution, size, args.max_batch, map_dtype=map_dtype
    )
    optimizer = TokenOptimizer(mapper, images, cfg, progress=False)
    step_batch = torch.rand(cfg.images_per_step, 3, size, size, generator=gen)
    z_cached = encode(step_batch).float()
    leaf = context.clone().to(backbone.dtype).requires_grad_(True)

    def bare_step() -> None:
        z = torch.cat([z_cached, encode(step_batch).float()])  # cached originals + fresh views
        out = partial(noise_latents_t0(z, gen).to(backbone.dtype), leaf)
        out.float().square().mean().backward()
        leaf.grad = None

    try:
        figures = paired(optimizer.train_step, bare_step, device, args.repeat)
    finally:
        mapper.remove()
    rows.append(
        {
            "key": "optimize_step",
            "measure": f"optimization step ({cfg.images_per_step} img), s",
            "unit": "s",
            **figures,
            "target": targets.get("optimize_step"),
            "memory_target": targets.get("optimize_step_memory"),
        }
    )
    result: dict[str, Any] = {
        "settings": {
            "model": args.model,
            "device": args.device,
            "dtype": args.dtype,
            "map_dtype": args.map_dtype or "float32",
            "image_size": size,
            "feature_resolution": cfg.feature_resolution,
            "num_tokens": cfg.num_tokens,
            "images_per_step": cfg.images_per_step,
            "repeat": args.repeat,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    if args.latent_views:
        from skp_core.benchmark_agreement import latent_view_agreement

        result["latent_view_agreement"] = latent_view_agreement(
            backbone, bundle, num_views=max(args.views), max_batch=args.max_batch
        )
    return result


def _target(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def format_results(result: dict[str, Any]) -> str:
    """The table: ours, bare model, ratio and target for time, then for peak memory."""
    s = result["settings"]
    lines = [
        f"skp-bench: model={s['model']} device={s['device']} dtype={s['dtype']} "
        f"maps={s['map_dtype']} image={s['image_size']} map_res={s['feature_resolution']} "
        f"tokens={s['num_tokens']} threads={s['threads']} pairs={s['repeat']}",
        f"{'measure':<44}{'ours':>11}{'bare model':>12}{'ratio':>8}{'target':>8}"
        f"{'ours MiB':>10}{'bare MiB':>10}{'ratio':>7}{'target':>8}",
    ]
    for row in result["rows"]:
        scale = 1000.0 if row["unit"] == "ms" else 1.0
        digits = 1 if row["unit"] == "ms" else 3
        lines.append(
            f"{row['measure']:<44}{row['ours_s'] * scale:>11.{digits}f}"
            f"{row['bare_s'] * scale:>12.{digits}f}{row['ratio']:>8.2f}"
            f"{_target(row.get('target')):>8}{row['ours_peak_mib']:>10.0f}"
            f"{row['bare_peak_mib']:>10.0f}{row['memory_ratio']:>7.2f}"
            f"{_target(row.get('memory_target')):>8}"
        )
        if "speedup_vs_image_views" in row:
            lines.append(f"  latent views: {row['speedup_vs_image_views']:.2f}x the image views")
    memory = "GPU peak allocated" if s["device"].startswith("cuda") else "peak RSS above rest"
    lines.append(f"time: median of {s['repeat']} interleaved pairs; memory: {memory}")
    agreement = result.get("latent_view_agreement")
    if agreement:
        lines.append(
            f"latent vs image views on {agreement['photos']} photos: keypoints "
            f"{agreement['median_px']:.1f} px apart (median), {agreement['within_2pct']:.0%} "
            f"within 2% of the image side"
        )
    return "\n".join(lines)
