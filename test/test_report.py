"""The run report draws photos at their own aspect, keypoints on the same content, a real key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from photos import photo

from offline_tools.report import at_original_aspect, keypoint_figure
from offline_tools.stages import image_to_uint8
from skp_core.image_batch import resize_images


def test_squashed_photo_is_drawn_at_its_aspect_with_a_named_key(tmp_path: Path) -> None:
    chelsea = photo("chelsea")  # 451 x 300, landscape
    height, width = chelsea.shape[:2]
    tensor = torch.from_numpy(chelsea).permute(2, 0, 1)[None] / 255
    square = image_to_uint8(resize_images(tensor, 128)[0])  # what the method sees
    shown = at_original_aspect(square, (height, width))
    assert shown.shape[1] == 128 and abs(shown.shape[0] - 128 * height / width) <= 1
    assert at_original_aspect(square, None) is square
    # A normalized position shows the same content in the photo and in the report image.
    sample_colour = chelsea[round(0.3 * height), round(0.7 * width)].astype(int)
    report_colour = shown[round(0.3 * shown.shape[0]), round(0.7 * shown.shape[1])].astype(int)
    assert np.abs(sample_colour - report_colour).max() < 40

    content = {
        "samples": [
            {
                "image": square,
                "original_size": (height, width),
                "keypoints": np.array([[0.7, 0.3]]),
                "title": "chelsea",
            }
        ],
        "keypoint_colors": [(230, 25, 75)],
        "keypoint_names": ["left ear"],
    }
    fig = keypoint_figure(content, tmp_path / "keypoints.png")
    (ax,) = [a for a in fig.axes if a.images]
    assert ax.images[0].get_array().shape[:2] == shown.shape[:2]
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert labels == ["left ear"]
    assert "argmax of its view-averaged attention map" in fig.texts[0].get_text()
    assert (tmp_path / "keypoints.png").stat().st_size > 0
