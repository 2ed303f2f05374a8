"""Segment sampling: which positions a TSN reads in training and at test time."""

import pytest
import torch

from tsnpipe.stages.train.sampling import centre_starts, snippet_positions, train_starts


@pytest.mark.parametrize(
    "count, segments, length",
    [(90, 3, 1), (91, 3, 1), (66, 3, 6), (80, 8, 5), (25, 25, 1), (300, 7, 6)],
)
def test_train_starts_fall_inside_their_own_segment(count, segments, length):
    average = (count - length + 1) // segments
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        starts = train_starts(count, segments, length, generator)
        assert len(starts) == segments
        for i, start in enumerate(starts):
            assert i * average <= start < (i + 1) * average
            assert start + length <= count


def test_train_starts_cover_every_offset_of_a_segment():
    generator = torch.Generator().manual_seed(1)
    seen = {start for _ in range(200) for start in train_starts(30, 3, 1, generator)[:1]}
    assert seen == set(range(10))


@pytest.mark.parametrize(
    "count, segments, length, expected",
    [
        (90, 3, 1, [15, 45, 75]),  # tick 30: centres
        (10, 5, 1, [1, 3, 5, 7, 9]),
        (66, 3, 6, [10, 30, 50]),  # 61 start positions, tick 20.33
        (100, 25, 1, [int(2 + 4 * i) for i in range(25)]),
        (3, 5, 1, [0, 0, 1, 2, 2]),  # fewer frames than snippets: some repeat
        (4, 2, 5, [0, 0]),  # no snippet fits: start at 0, clamp later
    ],
)
def test_centre_starts_are_segment_centres(count, segments, length, expected):
    assert centre_starts(count, segments, length) == expected


@pytest.mark.parametrize(
    "count, segments, length, expected",
    [
        (6, 3, 5, "sorted random"),  # 2 start positions for 3 segments, 6 frames: random sorted starts
        (3, 3, 1, [0, 1, 2]),  # one frame per segment
        (2, 3, 1, [0, 0, 0]),  # fewer frames than segments: all at 0
        (2, 3, 5, [0, 0, 0]),
    ],
)
def test_short_videos_get_valid_train_starts(count, segments, length, expected):
    generator = torch.Generator().manual_seed(2)
    starts = train_starts(count, segments, length, generator)
    if expected == "sorted random":
        assert starts == sorted(starts) and all(0 <= s <= count - length for s in starts)
    else:
        assert starts == expected


@pytest.mark.parametrize(
    "starts, length, count, expected",
    [
        ([0, 10], 3, 20, [0, 1, 2, 10, 11, 12]),
        ([0, 18], 3, 20, [0, 1, 2, 18, 19, 19]),  # runs past the end: the last position repeats
        ([0], 5, 2, [0, 1, 1, 1, 1]),
        ([0, 0], 1, 1, [0, 0]),
    ],
)
def test_snippet_positions_clamp_at_the_last_position(starts, length, count, expected):
    assert snippet_positions(starts, length, count) == expected
