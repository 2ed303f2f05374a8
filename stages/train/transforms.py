"""TSN augmentation and normalisation as tensor ops on a whole video's snippet stack at once.

A stack is a uint8 tensor [T, C, H, W]: the T = K * frames-per-snippet pictures of one video in
snippet order, C = 3 (RGB) or 2 (flow x, y). Every picture of a video gets the same crop and flip,
as TSN's Group* transforms do, so a flow stack stays consistent.

Training (tsn-pytorch `GroupMultiScaleCrop` + `GroupRandomHorizontalFlip`): a crop whose sides are
chosen from scales of the shorter image side (RGB 1, .875, .75, .66; flow and RGBDiff 1, .875, .75,
as tsn-pytorch's `TSN.get_augmentation`), the two
sides at most one scale step apart, at one of 13 fixed offsets (corners, centre, and the 8 points
between them: tsn-pytorch's `more_fix_crop`), resized (bilinear, antialiased) to `size`, then flipped
with probability 1/2; a flipped flow x image is inverted (255 - x), since motion to the right
becomes motion to the left.

Normalisation (tsn-pytorch): RGB pixels /255 then ImageNet mean/std; flow centred on 128,
(q - 128) / 255 / 0.226 (0.226 = mean of the ImageNet stds); RGBDiff: frames /255, differences of
consecutive frames, divided by 2 * 0.226.

Where RGBDiff differs from tsn-pytorch: its `models.py` declares mean 0 and std 2 * 0.226 for the
difference channels, but its `main.py` replaces the normalisation by `IdentityTransform` for RGBDiff,
so its network sees raw differences in [-1, 1] (mostly within +-0.1). tsnpipe applies the std that
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
    """Crop every picture of the stack to `box` and resize to size x size; returns float32 in 0..255."""
    top, left, crop_h, crop_w = box
    crop = stack[..., top:top + crop_h, left:left + crop_w].float()
    if crop.shape[-2:] == (size, size):
        return crop
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def hflip(stack: torch.Tensor, modality: str) -> torch.Tensor:
    """Mirror left-right; for flow also invert the x component (channel 0): q -> 255 - q."""
    flipped = stack.flip(-1)
    if modality == "flow":
        flipped = torch.cat([255 - flipped[:, :1], flipped[:, 1:]], dim=1)
    return flipped


def to_model_input(stack: torch.Tensor, modality: str, segments: int, length: int) -> torch.Tensor:
    """Normalise a cropped float stack [T, C, S, S] and group it into K snippets [K, channels, S, S]."""
    size = stack.shape[-2:]
    if modality == "rgb":
        mean = torch.tensor(RGB_MEAN, device=stack.device).view(1, 3, 1, 1)
        std = torch.tensor(RGB_STD, device=stack.device).view(1, 3, 1, 1)
        return ((stack / 255.0 - mean) / std).view(segments, 3, *size)
    if modality == "flow":
        return ((stack - 128.0) / 255.0 / GREY_STD).reshape(segments, 2 * length, *size)
    if modality == "rgbdiff":
        frames = (stack / 255.0).view(segments, length + 1, 3, *size)
        diffs = frames[:, 1:] - frames[:, :-1]
        return (diffs / (2 * GREY_STD)).reshape(segments, 3 * length, *size)
    raise ValueError(f"unknown modality {modality!r}")


def train_transform(
    stack: torch.Tensor, modality: str, segments: int, length: int, size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multi-scale crop, resize, random flip and normalise one video's stack: [K, channels, size, size]."""
    height, width = stack.shape[-2:]
    box = multiscale_crop_box(height, width, size, scales_for(modality), generator)
    cropped = crop_resize(stack, box, size)
    if torch.rand((), generator=generator) < 0.5:
        cropped = hflip(cropped, modality)
    return to_model_input(cropped, modality, segments, length)


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


def evaluation_views(stack: torch.Tensor, modality: str, segments: int, length: int, size: int, crops: int) -> torch.Tensor:
    """Every test view of one video: [crops, K, channels, size, size].

    Pictures are used at their stored size (short side 256 or 340x256); only a picture smaller than
    the crop is first resized so its shorter side equals `size`.
    """
    height, width = stack.shape[-2:]
    if min(height, width) < size:
        scale = size / min(height, width)
        height, width = max(size, round(height * scale)), max(size, round(width * scale))
        stack = F.interpolate(stack.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    views = []
    for top, left, flip in view_boxes(height, width, size, crops):
        view = crop_resize(stack, (top, left, size, size), size)
        if flip:
            view = hflip(view, modality)
        views.append(to_model_input(view, modality, segments, length))
    return torch.stack(views)
