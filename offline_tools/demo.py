"""`skp-demo`: the whole product end to end on built-in defaults, on a CPU, in minutes.

1. a folder of real photos (shipped with scikit-image and matplotlib),
2. `skp-train` on it with the built-in tiny model (optimize -> select -> report) -> a bundle,
3. a ROS 2 bag of a camera sweep over a photo,
4. the bag replayed through the keypoint node running that bundle, outputs recorded,
5. a summary pointing at the reports, with the tracking error: how far keypoints stray from
   where the sweep's known camera motion moves them (skp_ros.camera_motion).

The tiny model has random weights: the keypoints show the pipeline working, not what real
Stable Diffusion weights find (pass --model to use them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

DEMO_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
)


def write_photos(folder: Path) -> list[Path]:
    """The demo's training images: scikit-image photos plus matplotlib's Grace Hopper."""
    import matplotlib.cbook
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in DEMO_PHOTOS:
        rgb = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
        paths.append(folder / f"{name}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        paths.append(folder / "grace_hopper.jpg")
        paths[-1].write_bytes(handle.read())
    return paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skp-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--model", default="tiny", help="backbone (default: built-in tiny)")
    parser.add_argument("--steps", type=int, default=None, help="optimization steps")
    parser.add_argument("--frames", type=int, default=45, help="frames in the generated bag")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="mcap")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Loopback-only DDS before anything can initialise ROS (the demo never needs the network).
    from skp_ros.ros_env import apply_local_ros_env

    apply_local_ros_env()
    from offline_tools import train
    from skp_ros.replay_errors import ReplayError
    from skp_ros.replay_make_bag import make_bag
    from skp_ros.replay_run import replay_bag

    out = Path(args.out).resolve()
    start = time.perf_counter()
    print(f"[demo] 1/4 photos -> {out / 'photos'}")
    write_photos(out / "photos")

    print("[demo] 2/4 skp-train on the photos")
    train_args = ["--dataset", "custom", "--data-root", str(out / "photos"),
                  "--model", args.model, "--out", str(out / "train")]  # fmt: skip
    if args.steps is not None:
        train_args += ["--steps", str(args.steps)]
    if args.no_progress:
        train_args.append("--no-progress")
    code = train.main(train_args)
    if code != 0:
        return code
    bundle = out / "train" / "bundle"

    print("[demo] 3/4 a bag of a camera sweep over a photo")
    bag = out / "sweep_bag"
    if not bag.exists():
        make_bag(bag, sweep="astronaut", frames=args.frames, rate=10.0, storage=args.storage,
                 progress=not args.no_progress)  # fmt: skip

    print("[demo] 4/4 replay through the keypoint node")
    try:
        report = replay_bag(
            bag,
            out / "replay",
            node_args=[
                "-p",
                f"bundle:={bundle}",
                "-p",
                f"model:={args.model}",
                "-p",
                "device:=cpu",
                "-p",  # rclpy's standard QoS override: a reliable image subscription
                "qos_overrides./camera/image_raw.subscription.reliability:=reliable",
            ],
            lockstep=True,  # every frame answered, however busy the machine
            reliable=True,
            local=True,
            progress=not args.no_progress,
        )
    except ReplayError as exc:
        print(f"skp-demo: replay failed: {exc}", file=sys.stderr)
        return 1
    tracking = report.get("tracking_error_px") or {}
    summary = {
        "tracking_error_px": tracking.get("p50"),
        "camera_motion_px": tracking.get("camera_motion_p50"),
        "training_report": str(out / "train" / "report" / "index.html"),
        "bundle": str(bundle),
        "replay_report": str(out / "replay" / "report.json"),
        "overlay_strip": str(out / "replay" / "overlay_strip.png"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print("[demo] done in {seconds} s\n  training report: {training_report}\n"
          "  bundle: {bundle}\n  replay report: {replay_report}\n"
          "  overlays: {overlay_strip}".format(**summary))  # fmt: skip
    if summary["tracking_error_px"] is not None:
        print(f"  tracking error: median {summary['tracking_error_px']:.2f} px per frame against "
              f"the sweep's known motion (a keypoint glued to the image: "
              f"{summary['camera_motion_px']:.2f} px)")  # fmt: skip
    points = report.get("points_3d")
    if points:
        print(f"  3-D keypoints: {points['keypoints_with_3d']} of {points['keypoints']} from "
              f"the bag's camera_info + depth, median depth {points['depth_m_p50']:.3f} m, "
              f"at most {points['depth_error_mm_max']:.2f} mm off the poster's known "
              f"distance")  # fmt: skip
    if not report.get("matched"):
        print("[demo] the node published no keypoints for the replayed frames", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
