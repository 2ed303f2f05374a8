"""Where an untrimmed video's snippets sit: one every interval, centred as mmaction2 places them.

mmaction2 (`tools/data/activitynet/tsn_feature_extraction.py`, `UntrimmedSampleFrames`) reads raw frames at the
video's own rate: snippet centres at frames interval // 2 + k * interval (8, 24, 40, ... for its default 16)
while below the frame count, each snippet `clip_len` frames around its centre (RGB 1, flow 5), from
centre - clip_len // 2, clipped to the video.

tsnpipe's frames are extracted at F fps (10 by default), so the rule is kept in time: with a step of
s = interval * F extracted frames, snippet k is centred at (k + 1/2) * s for every k with (k + 1/2) * s < N
(N frames), and its centre picture is frame floor((k + 1/2) * s), the picture shown at that time (frame k
shows time k / F). The default interval is mmaction2's 16 frames at the video's own rate, 16 / source fps
seconds (0.64 s at 25 fps); `--every N` sets s = N extracted frames exactly. A snippet's time is its centre
picture's, k / F seconds.

A snippet of L positions (flow pairs, RGBDiff's L + 1 frames, a 3D clip's frames at a stride) takes them
around its centre from centre - L // 2 (times the stride), clamped to 0 .. count - 1 as mmaction2 clips.
A video shorter than half a step has no centre inside it (mmaction2 gives it no snippet): it gets one
snippet centred on its last picture, and `short` says so.
"""

from __future__ import annotations

import math

MMACTION_INTERVAL_FRAMES = 16  # tsn_feature_extraction.py --frame-interval default, in source frames
EPSILON = 1e-9  # 0.3 * 10 must land on frame 3, not 2.9999...


def frame_step(fps: float, interval: float | None = None, every: int | None = None,
               source_fps: float | None = None) -> float:
    """Extracted frames between two snippet centres: `every`, or `interval` seconds, or 16 source frames."""
    if every is not None:
        return float(every)
    if interval is None:
        if not source_fps:
            raise ValueError("the source frame rate is unknown")
        interval = MMACTION_INTERVAL_FRAMES / source_fps
    return interval * fps


def snippet_centres(frames: int, step: float) -> tuple[list[int], bool]:
    """0-based centre pictures of a video of `frames` pictures, and whether it was shorter than one snippet."""
    if frames < 1:
        raise ValueError("a video without frames has no snippets")
    count = max(0, math.ceil(frames / step - 0.5 - EPSILON))
    centres = [min(int(math.floor((k + 0.5) * step + EPSILON)), frames - 1) for k in range(count)]
    if not centres:
        return [frames - 1], True
    return centres, False


def window(centre: int, length: int, count: int, stride: int = 1) -> list[int]:
    """The `length` positions of a snippet around `centre`, `stride` apart, clamped to 0 .. count - 1."""
    first = centre - (length // 2) * stride
    return [min(max(first + i * stride, 0), count - 1) for i in range(length)]


def snippet_times(centres: list[int], fps: float) -> list[float]:
    """Each snippet's time in seconds: its centre picture's."""
    return [centre / fps for centre in centres]
