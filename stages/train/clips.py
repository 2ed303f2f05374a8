"""Clips for the 3D models: `clip_len` frames (or flow pairs) in a row, read from the same stores as TSN.

A clip takes every `stride`-th position from its start: 16 frames at stride 1 of tsnpipe's 10 fps
frames span 1.6 s (the C3D and R(2+1)D papers sample 16 frames of 25-30 fps video, about 0.6 s;
`--stride` 2 or 3 covers more time). A clip running past the video's end repeats the last position.

Training (C3D paper, torchvision's video_classification reference): a random start, every picture
resized to 128x171 (height x width; without antialiasing where the weights were made so, `clip_input`),
one random 112x112 crop for the whole clip, flipped with probability 1/2 (a flipped flow x image is
inverted, as in TSN). Validation: the centre clip, centre crop. Test: N clips (10, as the R(2+1)D paper
averages 10 clips of a video) spaced evenly over the video, each cut into 1 (centre), 3 (along the longer
side: mmaction2's ThreeCrop, not the R(2+1)D paper's) or 10 (corners + centre, and flips) crops of the
128x171 resize.
With another crop size the resize keeps the same ratio to it (size x 128/112 by size x 171/112).

Normalisation: RGB as the weights expect it (`rgb_input`): "kinetics", /255 then the Kinetics mean and std
of torchvision's video weights (the video ResNets, and C3D from scratch); "sports1m", C3D's Sports-1M weights
as the Caffe model was fed and jfzhang95's port feeds them: 0..255 in BGR order minus B 90, G 98, R 102, not
scaled. Flow as TSN (centred on 128). Flow clips stack their pairs along time: [2 (x, y), T, H, W].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tsnpipe.stages.store.reader import check_holds, open_reader
from tsnpipe.stages.train.data import counts_for, read_stack
from tsnpipe.stages.train.sampling import centre_starts, item_generator
from tsnpipe.stages.train.transforms import GREY_STD, hflip, view_boxes

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# jfzhang95's pytorch-video-recognition (dataloaders/dataset.py `normalize`, inference.py): the means its
# Sports-1M C3D weights are fed with, subtracted from cv2's BGR frames in 0..255.
SPORTS1M_BGR_MEAN = (90.0, 98.0, 102.0)
RESIZE = (128, 171)  # height, width of the pictures a 112 crop is cut from
CROP = 112


def resize_for(size: int) -> tuple[int, int]:
    """The 128x171 resize, scaled for a crop other than 112."""
    return round(size * RESIZE[0] / CROP), round(size * RESIZE[1] / CROP)


def clip_span(clip_len: int, stride: int) -> int:
    """Positions from a clip's first picture to its last, inclusive."""
    return (clip_len - 1) * stride + 1


def clip_positions(start: int, clip_len: int, stride: int, count: int) -> list[int]:
    """The positions of one clip, clamped to the video's last position."""
    last = max(count - 1, 0)
    return [min(start + i * stride, last) for i in range(clip_len)]


def random_start(count: int, span: int, generator: torch.Generator | None = None) -> int:
    """A start drawn uniformly among those whose clip fits; 0 when none fits."""
    return int(torch.randint(max(count - span + 1, 1), (1,), generator=generator))


def even_starts(count: int, clips: int, span: int) -> list[int]:
    """Starts of `clips` clips spread evenly over the video (centres of equal parts, as TSN's test snippets)."""
    return centre_starts(count, clips, span)


def resize_stack(stack: torch.Tensor, height: int, width: int, antialias: bool = True) -> torch.Tensor:
    """uint8 [T, C, H, W] to float [T, C, height, width], bilinear. `antialias` False resizes as the weights'
    makers did: torchvision's `VideoClassification` preset (its Kinetics weights) without antialiasing, rounded
    to whole numbers as it does on uint8 video; cv2.resize's INTER_LINEAR (the Sports-1M C3D) does not
    antialias either."""
    if stack.shape[-2:] == (height, width):
        return stack.float()
    resized = F.interpolate(stack.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=antialias)
    return resized if antialias else resized.round_().clamp_(0, 255)


def clip_input(params) -> dict:
    """How a run's clips are made for its weights: `rgb_input` (C3D's choice; the ResNets' Kinetics input) and
    `antialias`, on only where no weights' preprocessing is to be matched (C3D with the Kinetics input: from
    scratch or its own checkpoints)."""
    rgb_input = params.c3d_input if params.arch == "c3d" else "kinetics"
    return {"rgb_input": rgb_input, "antialias": params.arch == "c3d" and rgb_input == "kinetics"}


def normalise_clip(stack: torch.Tensor, modality: str, rgb_input: str = "kinetics") -> torch.Tensor:
    """A float [T, C, S, S] stack in 0..255 (RGB) to the model's input [C, T, S, S]; `rgb_input`: one of models.C3D_INPUTS."""
    if modality == "rgb" and rgb_input == "sports1m":
        mean = torch.tensor(SPORTS1M_BGR_MEAN, device=stack.device).view(1, 3, 1, 1)
        stack = stack.flip(1) - mean
    elif modality == "rgb":
        mean = torch.tensor(KINETICS_MEAN, device=stack.device).view(1, 3, 1, 1)
        std = torch.tensor(KINETICS_STD, device=stack.device).view(1, 3, 1, 1)
        stack = (stack / 255.0 - mean) / std
    else:
        stack = (stack - 128.0) / 255.0 / GREY_STD
    return stack.transpose(0, 1).contiguous()


def train_clip(
    stack: torch.Tensor, modality: str, size: int, generator: torch.Generator | None = None, rgb_input: str = "kinetics",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize, one random crop for the whole clip, random flip, normalise: [C, T, size, size]."""
    height, width = resize_for(size)
    resized = resize_stack(stack, height, width, antialias)
    top = int(torch.randint(height - size + 1, (1,), generator=generator))
    left = int(torch.randint(width - size + 1, (1,), generator=generator))
    crop = resized[..., top:top + size, left:left + size]
    if torch.rand((), generator=generator) < 0.5:
        crop = hflip(crop, modality)
    return normalise_clip(crop, modality, rgb_input)


def clip_views(
    stack: torch.Tensor, modality: str, clips: int, size: int, crops: int, rgb_input: str = "kinetics",
    antialias: bool = True,
) -> torch.Tensor:
    """Every test view of a video's `clips` clips (stacked in clip order): [crops, clips, C, T, size, size]."""
    height, width = resize_for(size)
    resized = resize_stack(stack, height, width, antialias)
    views = []
    for top, left, flip in view_boxes(height, width, size, crops):
        view = resized[..., top:top + size, left:left + size]
        if flip:
            view = hflip(view, modality)
        per_clip = view.unflatten(0, (clips, -1))  # [clips, T, C, S, S]
        views.append(torch.stack([normalise_clip(clip, modality, rgb_input) for clip in per_clip]))
    return torch.stack(views)


class ClipDataset(Dataset):
    """One item per video: (clips, label).

    mode "train": one random clip, [1, C, T, S, S]; "val": the centre clip, centre crop, [1, C, T, S, S];
    "test": `clips` evenly spaced clips x `crops` views, [crops, clips, C, T, S, S].
    """

    def __init__(
        self, store: str | Path, video_ids: list[str], labels: list[int], counts: list[int], modality: str,
        clip_len: int, stride: int, size: int, mode: str = "train", clips: int = 10, crops: int = 1,
        rgb_input: str = "kinetics", antialias: bool = True,
    ):
        self.reader = open_reader(store)
        self.video_ids = list(video_ids)
        check_holds(self.reader, self.video_ids)
        self.labels = [int(label) for label in labels]
        self.counts = [int(count) for count in counts]
        self.modality, self.clip_len, self.stride, self.size = modality, clip_len, stride, size
        self.mode, self.clips, self.crops, self.rgb_input, self.antialias = mode, clips, crops, rgb_input, antialias
        self.span = clip_span(clip_len, stride)

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, generator = item_generator(key)  # an index, or (index, seed, epoch) from sampling.EpochSampler
        video_id, count, label = self.video_ids[index], self.counts[index], self.labels[index]
        if self.mode == "train":
            starts = [random_start(count, self.span, generator)]
        elif self.mode == "val":
            starts = even_starts(count, 1, self.span)
        else:
            starts = even_starts(count, self.clips, self.span)
        positions = [p for start in starts for p in clip_positions(start, self.clip_len, self.stride, count)]
        stack = read_stack(self.reader, video_id, positions, self.modality)
        if self.mode == "train":
            return train_clip(stack, self.modality, self.size, generator, self.rgb_input, self.antialias).unsqueeze(0), label
        crops = 1 if self.mode == "val" else self.crops
        views = clip_views(stack, self.modality, len(starts), self.size, crops, self.rgb_input, self.antialias)
        return (views[0] if self.mode == "val" else views), label


def clip_table_dataset(
    store: str | Path, table: pd.DataFrame, modality: str, clip_len: int, stride: int, size: int, mode: str,
    clips: int = 10, crops: int = 1, rgb_input: str = "kinetics", antialias: bool = True,
) -> ClipDataset:
    """A ClipDataset over the videos of a split table (train.csv, val.csv or test.csv)."""
    return ClipDataset(
        store, table["video_id"].tolist(), table["label"].tolist(), np.asarray(counts_for(table, modality)), modality,
        clip_len, stride, size, mode, clips, crops, rgb_input, antialias,
    )


def dataset_for(params, table: pd.DataFrame, mode: str, store: str | Path | None = None, views: int | None = None, crops: int = 1):
    """The dataset a run's arch reads (TSN snippets or 3D clips) over a split table.

    `views`: snippets (TSN) or clips (3D) per test video; training and validation use the params'.
    """
    from tsnpipe.stages.train.data import table_dataset

    store = store or params.store
    if params.arch == "tsn":
        segments = views if mode == "test" and views else params.segments
        return table_dataset(store, table, params.modality, segments, params.length, params.size, mode, crops)
    return clip_table_dataset(
        store, table, params.modality, params.clip_len, params.stride, params.size, mode, views or 1, crops,
        **clip_input(params),
    )
