"""Optical flow as colour with the Middlebury wheel (Baker et al., "A Database and Evaluation Methodology for
Optical Flow", IJCV 2011; the `flowToColor` of its flow-code): hue is the direction, saturation the speed.

Unlike the Middlebury tool, which scales each image by its own largest motion, the speed is divided by one
fixed `scale` (TV-L1's bound, 20 px, by default), so the colours of two videos mean the same motion.
The wheel's 55 hues are spaced as in the reference: red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11,
blue-magenta 13, magenta-red 6.
"""

from __future__ import annotations

import numpy as np

SEGMENTS = (15, 6, 4, 11, 13, 6)  # RY, YG, GC, CB, BM, MR


def colour_wheel() -> np.ndarray:
    """The wheel's hues as a (55, 3) float array of RGB in 0..255."""
    ry, yg, gc, cb, bm, mr = SEGMENTS
    ramps = [
        (ry, lambda t: (255, 255 * t, 0)), (yg, lambda t: (255 - 255 * t, 255, 0)),
        (gc, lambda t: (0, 255, 255 * t)), (cb, lambda t: (0, 255 - 255 * t, 255)),
        (bm, lambda t: (255 * t, 0, 255)), (mr, lambda t: (255, 0, 255 - 255 * t)),
    ]
    rows = [np.array(colour(i / n), dtype=np.float64) for n, colour in ramps for i in range(n)]
    return np.stack(rows)


def flow_to_rgb(u: np.ndarray, v: np.ndarray, scale: float = 20.0) -> np.ndarray:
    """H x W x 3 uint8 RGB of a flow field (u right, v down, in pixels); speeds at or above `scale` are full colour."""
    wheel = colour_wheel()
    count = len(wheel)
    radius = np.sqrt(u ** 2 + v ** 2) / scale
    angle = np.arctan2(-v, -u) / np.pi  # -1..1, as in flowToColor
    position = (angle + 1) / 2 * (count - 1)
    lower = np.floor(position).astype(int)
    upper = (lower + 1) % count
    weight = (position - lower)[..., None]
    colour = ((1 - weight) * wheel[lower] + weight * wheel[upper]) / 255.0
    inside = (radius <= 1)[..., None]
    speed = np.minimum(radius, 1)[..., None]
    colour = np.where(inside, 1 - speed * (1 - colour), colour * 0.75)  # beyond the scale: darker, as the reference
    return np.floor(255 * colour).astype(np.uint8)


def wheel_legend(side: int = 121, scale: float = 20.0) -> np.ndarray:
    """The colour of every motion up to `scale` pixels, as a disk `side` pixels across (white outside)."""
    half = side // 2
    y, x = np.mgrid[-half:side - half, -half:side - half].astype(np.float64)
    u, v = x / half * scale, y / half * scale
    image = flow_to_rgb(u, v, scale)
    image[np.sqrt(x ** 2 + y ** 2) > half] = 255
    return image
