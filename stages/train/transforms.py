"""TSN augmentation and normalisation as tensor ops, split where the uint8 pictures cross to the device.

A stack is a uint8 tensor [T, C, H, W]: the T = K * frames-per-snippet pictures of one video in
snippet order, C = 3 (RGB) or 2 (flow x, y). Every picture of a video gets the same crop and flip,
as TSN's Group* transforms do, so a flow stack stays consistent.

Two halves. In a DataLoader worker, per video and in uint8: `train_crop` (the random multi-scale
crop, resized to the crop size and rounded to whole grey levels, and the flip decision) or
`centre_crop`; test videos cross whole. On the device (the GPU, or the CPU without one), per batch:
`flip_and_normalise` (float, the flips with flow-x inversion, normalisation, snippet layout) and
`video_views` (the 1, 3 or 10 test views of every video). The same functions run on either device,
so the CPU path gives the tensors the GPU path gives; `train_transform` is both halves for one video.

Training (tsn-pytorch `GroupMultiScaleCrop` + `GroupRandomHorizontalFlip`): a crop whose sides are
chosen from scales of the shorter image side (RGB 1, .875, .75, .66; flow and RGBDiff 1, .875, .75,
as tsn-pytorch's `TSN.get_augmentation`), the two sides at most one scale step apart, at one of 13
fixed offsets (corners, centre, and the 8 points between them: tsn-pytorch's `more_fix_crop`),
resized (bilinear, antialiased) to `size`, then flipped with probability 1/2; a flipped flow x image
is inverted (255 - x), since motion to the right becomes motion to the left.

Normalisation (tsn-pytorch): RGB pixels /255 then ImageNet mean/std; flow centred on 128,
(q - 128) / 255 / 0.226 (0.226 = mean of the ImageNet stds); RGBDiff: frames /255, differences of
consecutive frames, divided by 2 * 0.226.

Where RGBDiff differs from tsn-pytorch: its `models.py` declares mean 0 and std 2 * 0.226 for the
difference channels, but its `main.py` replaces the normalisation by `IdentityTransform` for RGBDiff,
so its network sees raw differences in [-1, 1]. tsnpipe applies the std that
tsn-pytorch declares: the first conv of an RGBDiff TSN starts from the mean of ImageNet RGB filters,
which expect inputs of unit spread, and differences divided by 0.452 are about 2.2x larger than raw
ones, nearer that spread. The crop scales, the flip and the channel order are tsn-pytorch's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)
GREY_STD = sum(RGB_STD) / 3
RGB_SCALES = (1.0, 0.875, 0.75, 0.66)
STACK_SCALES = (1.0, 0.875, 0.75)  # flow and RGBDiff: stacks of several pictures crop less deep


def scales_for(modality: str) -> tuple[float, ...]:
    """The multi-scale crop scales of tsn-pytorch for this modality: four for RGB, three for flow and RGBDiff."""
    return RGB_SCALES if modality == "rgb" else STACK_SCALES


def fixed_offsets(height: int, width: int, crop_h: int, crop_w: int) -> list[tuple[int, int]]:
    """The 13 (top, left) crop offsets of tsn-pytorch: corners, centre, edge midpoints, quarter points."""
    h_step, w_step = (height - crop_h) // 4, (width - crop_w) // 4
    grid = [
        (0, 0), (0, 4), (4, 0), (4, 4), (2, 2),
        (2, 0), (2, 4), (4, 2), (0, 2),
        (1, 1), (1, 3), (3, 1), (3, 3),
    ]
    return [(row * h_step, col * w_step) for row, col in grid]


def multiscale_crop_box(
    height: int, width: int, size: int, scales: tuple[float, ...], generator: torch.Generator | None = None,
    max_distort: int = 1,
) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of one random multi-scale crop."""
    base = min(height, width)
    sides = [int(base * scale) for scale in scales]
    sides = [size if abs(side - size) < 3 else side for side in sides]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    offsets = fixed_offsets(height, width, crop_h, crop_w)
    top, left = offsets[int(torch.randint(len(offsets), (1,), generator=generator))]
    return top, left, crop_h, crop_w


def crop_resize(stack: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Crop every picture of the stack to `box` and resize it to size x size (bilinear, antialiased).

    The result keeps the stack's dtype: a uint8 stack is resized in uint8 (rounded to whole grey levels,
    within one level of the float resize), a float stack stays float.
    """
    top, left, crop_h, crop_w = box
    crop = stack[..., top:top + crop_h, left:left + crop_w]
    if crop.shape[-2:] == (size, size):
        return crop
    # the view itself: torch resizes a contiguous copy faster, but its uint8 path rounds differently (a run
    # trained and tested the earlier way would not give the same scores)
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def enlarge(stack: torch.Tensor, size: int) -> torch.Tensor:
    """A stack whose shorter side is below `size`, resized so that side equals `size`; others unchanged."""
    height, width = stack.shape[-2:]
    if min(height, width) >= size:
        return stack
    scale = size / min(height, width)
    height, width = max(size, round(height * scale)), max(size, round(width * scale))
    return F.interpolate(stack, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def hflip(stack: torch.Tensor, modality: str) -> torch.Tensor:
    """Mirror left-right pictures [..., C, H, W]; for flow also invert the x component (channel 0): q -> 255 - q."""
    flipped = stack.flip(-1)
    if modality == "flow":
        flipped = torch.cat([255 - flipped[..., :1, :, :], flipped[..., 1:, :, :]], dim=-3)
    return flipped


def to_model_input(stack: torch.Tensor, modality: str, segments: int, length: int) -> torch.Tensor:
    """Normalise cropped pictures [..., T, C, S, S] and group them into K snippets [..., K, channels, S, S].

    Leading dimensions (videos, views) pass through; the result is float32 whatever the input dtype.
    """
    lead, size = stack.shape[:-4], stack.shape[-2:]
    stack = stack.float()
    if modality == "rgb":
        mean = torch.tensor(RGB_MEAN, device=stack.device).view(3, 1, 1)
        std = torch.tensor(RGB_STD, device=stack.device).view(3, 1, 1)
        return ((stack / 255.0 - mean) / std).reshape(*lead, segments, 3, *size)
    if modality == "flow":
        return ((stack - 128.0) / 255.0 / GREY_STD).reshape(*lead, segments, 2 * length, *size)
    if modality == "rgbdiff":
        frames = (stack / 255.0).reshape(*lead, segments, length + 1, 3, *size)
        diffs = frames[..., 1:, :, :, :] - frames[..., :-1, :, :, :]
        return (diffs / (2 * GREY_STD)).reshape(*lead, segments, 3 * length, *size)
    raise ValueError(f"unknown modality {modality!r}")


def train_crop(
    stack: torch.Tensor, modality: str, size: int, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, bool]:
    """The worker's half of training augmentation: a random multi-scale crop resized to size x size in the
    stack's dtype, and whether the device is to flip it (probability 1/2)."""
    height, width = stack.shape[-2:]
    box = multiscale_crop_box(height, width, size, scales_for(modality), generator)
    flip = bool(torch.rand((), generator=generator) < 0.5)
    return crop_resize(stack, box, size), flip


def centre_crop(stack: torch.Tensor, size: int) -> torch.Tensor:
    """The validation view: the centre size x size square, of pictures first enlarged if smaller than it."""
    stack = enlarge(stack, size)
    top, left, _ = view_boxes(*stack.shape[-2:], size, 1)[0]
    return stack[..., top:top + size, left:left + size]


def flip_and_normalise(
    pictures: torch.Tensor, flips: torch.Tensor, modality: str, segments: int, length: int,
) -> torch.Tensor:
    """The device's half for a batch: pictures [B, T, C, S, S] (uint8 or float), flips [B] (bool) ->
    model input [B, K, channels, S, S], float32. Flipping every video and choosing per video keeps the
    batch free of host synchronisation."""
    pictures = pictures.float()
    flips = flips.to(pictures.device).view(-1, *([1] * (pictures.dim() - 1)))
    pictures = torch.where(flips, hflip(pictures, modality), pictures)
    return to_model_input(pictures, modality, segments, length)


def train_transform(
    stack: torch.Tensor, modality: str, segments: int, length: int, size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multi-scale crop, resize, random flip and normalise one video's stack: [K, channels, size, size]."""
    pictures, flip = train_crop(stack, modality, size, generator)
    return flip_and_normalise(pictures[None], torch.tensor([flip]), modality, segments, length)[0]


def view_boxes(height: int, width: int, size: int, crops: int) -> list[tuple[int, int, bool]]:
    """(top, left, flip) of the test views.

    1: the centre. 3: three squares along the longer side (start, centre, end), centred on the
    shorter one (mmaction2 `ThreeCrop`). 10: four corners and the centre, then the same five flipped
    (Caffe TSN's oversampling).
    """
    centre = ((height - size) // 2, (width - size) // 2)
    if crops == 1:
        return [(*centre, False)]
    if crops == 3:
        if width >= height:
            return [(centre[0], left, False) for left in (0, (width - size) // 2, width - size)]
        return [(top, centre[1], False) for top in (0, (height - size) // 2, height - size)]
    if crops == 10:
        five = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size), centre]
        return [(top, left, flip) for flip in (False, True) for top, left in five]
    raise ValueError(f"crops must be 1, 3 or 10, not {crops}")


def video_views(
    videos, modality: str, segments: int, length: int, size: int, crops: int,
) -> torch.Tensor:
    """Every test view of a batch of videos: [B, crops, K, channels, size, size], float32.

    `videos` is a tensor [B, T, C, H, W] or a list of [T, C, H, W] stacks whose picture sizes may
    differ, on the device that is to do the work. Pictures are used at their stored size (short side
    256 or 340x256); only pictures smaller than the crop are first enlarged so their shorter side
    equals `size`. Each video's views are cut (and mirrored) at its own picture size, then all are
    normalised in one batch.
    """
    cut = []
    for video in videos:
        video = enlarge(video.float(), size)
        views = []
        for top, left, flip in view_boxes(*video.shape[-2:], size, crops):
            view = video[..., top:top + size, left:left + size]
            views.append(hflip(view, modality) if flip else view)
        cut.append(torch.stack(views))
    return to_model_input(torch.stack(cut), modality, segments, length)
