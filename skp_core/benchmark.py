"""`skp-bench`: speed and memory of inference and optimization next to the bare model's cost.

The bare cost is what any implementation must pay: a batched VAE encode plus the UNet up to
the last captured layer (forward, or forward + backward to the context). The ratio of our
figures to it is the overhead of capture, augmentation, losses and read-out.
Targets: inference with 10 views <= 1.3x bare; an optimization step <= 1.2x bare fwd+bwd.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch

from skp_core.attention_capture import processor_key
from skp_core.attention_maps import AttentionMapper
from skp_core.backbone import Backbone, BackboneError, load_backbone
from skp_core.bundle import Bundle
from skp_core.config import default_config
from skp_core.detector import KeypointDetector
from skp_core.latents import noise_latents_t0
from skp_core.optimize import TokenOptimizer


class _Stop(Exception):
    pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int = 1) -> float:
    """Median wall time in seconds over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextmanager
def _peak_memory(device: torch.device):
    """Yields a dict filled with the peak memory (MiB) of the block."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        yield out
        # ru_maxrss is the process's lifetime peak (KiB on Linux): an upper bound.
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_partial_unet(
    backbone: Backbone, last_layer: str
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """UNet forward with diffusers' own processors, stopped after `last_layer` (no capture)."""
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


def run_benchmark(args: argparse.Namespace) -> dict[str, float]:
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
    results: dict[str, float] = {}
    partial = bare_partial_unet(backbone, cfg.layers[-1])
    vae = backbone.vae

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = x.to(device=device, dtype=backbone.dtype) * 2 - 1
            return vae.encode(x).latent_dist.mean * vae.config.scaling_factor

    # -- inference -------------------------------------------------------------------------
    bundle = Bundle(
        context=context.float().cpu(),
        selected_indices=torch.arange(cfg.top_k),
        backbone={"model": args.model, "fingerprint": backbone.fingerprint},
        method=cfg.to_dict(),
    )
    image = torch.rand(1, 3, size, size, generator=gen)
    for views in args.views:
        batch = torch.rand(views, 3, size, size, generator=gen)

        def bare_inference(batch=batch) -> None:
            with torch.no_grad():
                z = encode(batch)
                partial(
                    noise_latents_t0(z.float(), gen).to(backbone.dtype), context.to(backbone.dtype)
                )

        detector = KeypointDetector(backbone, bundle, num_views=views, max_batch=args.max_batch)
        try:
            with _peak_memory(device) as mem:
                ours = _time(lambda d=detector: d.keypoint_maps(image), device, args.repeat)
        finally:
            detector.close()
        bare = _time(bare_inference, device, args.repeat)
        results[f"inference_{views}v_ms"] = ours * 1000
        results[f"bare_{views}v_ms"] = bare * 1000
        results[f"inference_{views}v_ratio"] = ours / bare
        results[f"inference_{views}v_peak_mib"] = mem["peak_mib"]

    # -- optimization ----------------------------------------------------------------------
    images = [torch.rand(3, size, size, generator=gen) for _ in range(cfg.images_per_step)]
    mapper = AttentionMapper(backbone, cfg.layers, cfg.feature_resolution, size, args.max_batch)
    optimizer = TokenOptimizer(mapper, images, cfg, progress=False)
    try:
        with _peak_memory(device) as mem:
            step = _time(optimizer.train_step, device, args.repeat)
    finally:
        mapper.remove()
    batch = torch.rand(cfg.images_per_step, 3, size, size, generator=gen)
    z_cached = encode(batch).float()
    leaf = context.clone().to(backbone.dtype).requires_grad_(True)

    def bare_step() -> None:
        z = torch.cat([z_cached, encode(batch).float()])  # cached originals + fresh views
        out = partial(noise_latents_t0(z, gen).to(backbone.dtype), leaf)
        out.float().square().mean().backward()
        leaf.grad = None

    bare = _time(bare_step, device, args.repeat)
    results["optimize_step_s"] = step
    results["bare_fwd_bwd_s"] = bare
    results["optimize_step_ratio"] = step / bare
    results["optimize_peak_mib"] = mem["peak_mib"]
    return results


def format_results(results: dict[str, float], args: argparse.Namespace) -> str:
    lines = [
        f"skp-bench: model={args.model} device={args.device} dtype={args.dtype} "
        f"image={args.image_size} maps={args.feature_resolution} tokens={args.num_tokens} "
        f"threads={torch.get_num_threads()}",
        f"{'measure':<34}{'ours':>12}{'bare model':>14}{'ratio':>8}{'target':>8}",
    ]
    for views in args.views:
        target = "1.30" if views == 10 else ""
        lines.append(
            f"{f'inference, {views} view(s), ms/image':<34}"
            f"{results[f'inference_{views}v_ms']:>12.1f}{results[f'bare_{views}v_ms']:>14.1f}"
            f"{results[f'inference_{views}v_ratio']:>8.2f}{target:>8}"
        )
    lines.append(
        f"{f'optimization step ({args.images_per_step} img), s':<34}"
        f"{results['optimize_step_s']:>12.3f}{results['bare_fwd_bwd_s']:>14.3f}"
        f"{results['optimize_step_ratio']:>8.2f}{'1.20':>8}"
    )
    peak = max(v for k, v in results.items() if k.endswith("peak_mib"))
    label = "GPU peak allocated" if args.device.startswith("cuda") else "process peak RSS"
    lines.append(f"{label}: {peak:.0f} MiB")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skp-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, sd15-random, a folder or hub id")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--feature-resolution", type=int, default=None)
    parser.add_argument("--num-tokens", type=int, default=None)
    parser.add_argument("--images-per-step", type=int, default=None)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--max-batch", type=int, default=None, help="images per UNet pass")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    defaults = default_config(args.model)
    for name in ("image_size", "feature_resolution", "num_tokens", "images_per_step"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run_benchmark(args)
    except BackboneError as exc:
        print(f"skp-bench: {exc}", file=sys.stderr)
        return 2
    print(format_results(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
