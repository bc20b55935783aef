"""Default keypoint names and colours, the same in the bundle, the node and every picture.

No torch here: tools that only draw (skp-replay's overlays) import it without the method.
"""

from __future__ import annotations

import colorsys

__all__ = ["default_colors", "default_keypoint_names"]

# Sasha Trubetskoy's 20 distinct colours (RGB): readable on natural images and to most
# colour-blind viewers. Keypoints beyond 20 get golden-angle hues (see `default_colors`).
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
)


def default_keypoint_names(num_keypoints: int) -> list[str]:
    """Names used when training gave none: ``kp0`` .. ``kp{K-1}``."""
    return [f"kp{i}" for i in range(num_keypoints)]


def default_colors(num_keypoints: int) -> list[tuple[int, int, int]]:
    """A fixed palette (RGB 0..255), so the same keypoint has the same colour everywhere."""
    colors = list(_PALETTE[:num_keypoints])
    for i in range(len(colors), num_keypoints):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors
