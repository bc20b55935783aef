"""The `skp-bench` command line: parses and checks its arguments before importing torch.

What it measures and how is documented in skp_core.benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = (
    "speed and memory of inference and optimization next to the bare model's cost "
    "(ratios, never asserted)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skp-bench", description=DESCRIPTION)
    parser.add_argument(
        "--model", default="tiny", help="tiny, sd15-random, sd15-narrow, a folder or hub id"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="backbone dtype")
    parser.add_argument(
        "--map-dtype",
        choices=("float32", "float16", "bfloat16"),
        default=None,
        help="dtype of the map computation (half precision: CUDA only; default float32)",
    )
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--feature-resolution", type=int, default=None)
    parser.add_argument("--num-tokens", type=int, default=None)
    parser.add_argument("--images-per-step", type=int, default=None)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--max-batch", type=int, default=None, help="images per UNet pass")
    parser.add_argument("--repeat", type=int, default=3, help="timed pairs per measure")
    parser.add_argument(
        "--latent-views",
        action="store_true",
        help="also time view_space=latent and its keypoint agreement on real photos",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    from skp_core.config import default_config

    defaults = default_config(args.model)
    for name in ("image_size", "feature_resolution", "num_tokens", "images_per_step"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from skp_core.backbone import BackboneError
    from skp_core.benchmark import format_results, run_benchmark

    try:
        result = run_benchmark(args)
    except (BackboneError, ValueError) as exc:
        print(f"skp-bench: {exc}", file=sys.stderr)
        return 2
    print(format_results(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
