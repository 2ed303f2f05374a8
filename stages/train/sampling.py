"""Which frames a TSN sees: K segments, one snippet of `length` consecutive positions per segment.

Positions are 0-based (position k is file `img_{k+1:05d}.jpg`, or flow pair k+1). `count` is the
number of positions the snippet type can start from: frames for RGB and RGBDiff, flow pairs for flow.
A snippet needs `length` consecutive positions (RGBDiff: differences + 1 frames).

Training (mmaction2 `SampleFrames`, tsn-pytorch `_sample_indices`): the `count - length + 1` start
positions are cut into K equal segments of `avg` positions and each snippet starts at a random offset
inside its segment. When a video has fewer start positions than segments but more than K frames,
the K starts are drawn at random and sorted; shorter still, every snippet starts at 0.

Validation and test (tsn-pytorch `_get_val_indices` / `_get_test_indices`): segment centres,
`int(tick / 2 + tick * i)` with `tick = (count - length + 1) / K`; all 0 when no snippet fits.
N test snippets are simply K = N segment centres.

Short videos clamp: a snippet running past the last position repeats the last position.
"""

from __future__ import annotations

import torch


def train_starts(count: int, segments: int, length: int, generator: torch.Generator | None = None) -> list[int]:
    """Random snippet starts, one inside each of `segments` equal segments."""
    starts = count - length + 1
    average = starts // segments
    if average > 0:
        jitter = torch.randint(average, (segments,), generator=generator)
        return [i * average + int(j) for i, j in enumerate(jitter)]
    if count > segments:
        drawn = torch.randint(max(starts, 1), (segments,), generator=generator)
        return sorted(int(j) for j in drawn)
    return [0] * segments


def centre_starts(count: int, segments: int, length: int) -> list[int]:
    """Evenly spaced snippet starts at segment centres (validation and test)."""
    starts = count - length + 1
    if starts < 1:
        return [0] * segments
    tick = starts / segments
    return [int(tick / 2.0 + tick * i) for i in range(segments)]


def snippet_positions(starts: list[int], length: int, count: int) -> list[int]:
    """All positions to read, snippet after snippet, clamped to the last position of the video."""
    last = max(count - 1, 0)
    return [min(start + offset, last) for start in starts for offset in range(length)]
