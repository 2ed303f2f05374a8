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

Training randomness is a pure function of (seed, epoch, video index): `EpochSampler` hands the loader
keys `(index, seed, epoch)` in an order drawn from (seed, epoch), and a dataset turns each key into its own
generator (`item_generator`). Which worker reads a video, how many workers there are, and whether the run
was stopped and resumed in between change nothing: a resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import torch
from torch.utils.data import Sampler

ORDER = -1  # the "index" of an epoch's order in `sample_seed`


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed of (seed, epoch, index), independent for every triple."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def item_generator(key) -> tuple[int, torch.Generator | None]:
    """(index, generator) of a loader key: `(index, seed, epoch)` from `EpochSampler`, or a plain index (no
    generator of its own: torch's global stream, for direct use)."""
    if isinstance(key, tuple):
        index, seed, epoch = key
        return int(index), torch.Generator().manual_seed(sample_seed(seed, epoch, index))
    return int(key), None


class EpochSampler(Sampler):
    """Training order and item keys for one epoch (`set_epoch` before each): the indices of `inner` (a
    DistributedSampler under torchrun) or a permutation drawn from (seed, epoch), as `(index, seed, epoch)`."""

    def __init__(self, size: int, seed: int, inner: Sampler | None = None):
        self.size, self.seed, self.inner, self.epoch = size, seed, inner, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.inner is not None and hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner) if self.inner is not None else self.size

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        if self.inner is not None:
            order = list(self.inner)
        else:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, ORDER))
            order = torch.randperm(self.size, generator=generator).tolist()
        return iter([(index, self.seed, self.epoch) for index in order])


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
