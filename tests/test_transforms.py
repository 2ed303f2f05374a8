"""Augmentation and normalisation on snippet stacks: crops, flips, flow inversion, channel layout."""

import pytest
import torch

from tsnpipe.stages.train.transforms import (
    GREY_STD, centre_crop, crop_resize, flip_and_normalise, hflip, multiscale_crop_box, scales_for, to_model_input,
    train_crop, train_transform, video_views, view_boxes,
)


def flow_stack(pictures=4, height=6, width=8):
    """A flow stack whose x and y images are distinct ramps, so flips and swaps are visible."""
    x = torch.arange(width, dtype=torch.uint8).expand(pictures, height, width) * 10
    y = torch.arange(height, dtype=torch.uint8).view(1, height, 1).expand(pictures, height, width) * 20 + 1
    return torch.stack([x, y], dim=1)


def test_flipping_flow_mirrors_and_inverts_x_only():
    stack = flow_stack()
    flipped = hflip(stack, "flow")
    assert torch.equal(flipped[:, 0], 255 - stack[:, 0].flip(-1))
    assert torch.equal(flipped[:, 1], stack[:, 1].flip(-1))


def test_flipping_rgb_only_mirrors():
    stack = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    assert torch.equal(hflip(stack, "rgb"), stack.flip(-1))


@pytest.mark.parametrize(
    "modality, scales",  # tsn-pytorch `TSN.get_augmentation`
    [("rgb", (1, 0.875, 0.75, 0.66)), ("flow", (1, 0.875, 0.75)), ("rgbdiff", (1, 0.875, 0.75))],
)
def test_multiscale_crops_use_the_scales_of_the_shorter_side_and_stay_inside(modality, scales):
    height, width, size = 256, 340, 224
    allowed = {size if abs(int(height * s) - size) < 3 else int(height * s) for s in scales}
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(300):
        top, left, crop_h, crop_w = multiscale_crop_box(height, width, size, scales_for(modality), generator)
        assert crop_h in allowed and crop_w in allowed
        assert 0 <= top and top + crop_h <= height and 0 <= left and left + crop_w <= width
        seen.add((crop_h, crop_w))
    assert len(seen) == 3 * len(scales) - 2  # pairs at most one scale step apart


def test_train_transform_gives_k_snippets_at_the_crop_size():
    stack = torch.randint(0, 256, (3 * 6, 3, 48, 64), dtype=torch.uint8)
    out = train_transform(stack, "rgbdiff", segments=3, length=5, size=32)
    assert out.shape == (3, 15, 32, 32)


def test_flow_channels_are_interleaved_x_then_y_per_pair():
    stack = torch.zeros((2 * 3, 2, 4, 4))
    for picture in range(6):
        stack[picture, 0] = 128 + picture  # x of pair `picture`
        stack[picture, 1] = 128 - picture
    out = to_model_input(stack, "flow", segments=2, length=3)
    assert out.shape == (2, 6, 4, 4)
    expected = torch.tensor([[0, 0, 1, -1, 2, -2], [3, -3, 4, -4, 5, -5]], dtype=torch.float32) / 255 / GREY_STD
    assert torch.allclose(out[:, :, 0, 0], expected)


def test_rgb_is_normalised_with_imagenet_statistics():
    stack = torch.full((1, 3, 2, 2), 255.0 * 0.485)
    stack[:, 1] = 255.0 * (0.456 + 0.224)
    out = to_model_input(stack, "rgb", segments=1, length=1)
    assert torch.allclose(out[0, 0], torch.zeros(2, 2), atol=1e-6)
    assert torch.allclose(out[0, 1], torch.ones(2, 2), atol=1e-5)


def test_rgbdiff_is_the_difference_of_consecutive_frames():
    frames = torch.stack([torch.full((3, 2, 2), float(v)) for v in (10, 40, 40, 0)])
    out = to_model_input(frames, "rgbdiff", segments=1, length=3)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([30.0] * 3 + [0.0] * 3 + [-40.0] * 3) / 255 / (2 * GREY_STD))


@pytest.mark.parametrize(
    "height, width, crops, expected",
    [
        (256, 340, 1, [(16, 58, False)]),
        (256, 340, 3, [(16, 0, False), (16, 58, False), (16, 116, False)]),
        (340, 256, 3, [(0, 16, False), (58, 16, False), (116, 16, False)]),
        (256, 340, 10, [(t, l, f) for f in (False, True) for t, l in ((0, 0), (0, 116), (32, 0), (32, 116), (16, 58))]),
    ],
)
def test_test_views_are_centre_three_along_the_long_side_or_corners_centre_and_flips(height, width, crops, expected):
    assert view_boxes(height, width, 224, crops) == expected


def test_ten_views_of_flow_include_inverted_mirror_images():
    stack = flow_stack(pictures=2, height=8, width=10)
    views = video_views([stack], "flow", segments=1, length=2, size=8, crops=10)[0]
    assert views.shape == (10, 1, 4, 8, 8)
    plain, mirrored = views[0], views[5]  # top-left corner, and the same corner flipped
    raw_plain = crop_resize(stack, (0, 0, 8, 8), 8).float()
    assert torch.allclose(plain, to_model_input(raw_plain, "flow", 1, 2))
    assert torch.allclose(mirrored, to_model_input(hflip(raw_plain, "flow"), "flow", 1, 2))


def test_pictures_smaller_than_the_crop_are_enlarged_first():
    stack = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8)
    assert video_views([stack], "rgb", segments=2, length=1, size=56, crops=3).shape == (1, 3, 2, 3, 56, 56)
    assert centre_crop(stack, 56).shape == (2, 3, 56, 56) and centre_crop(stack, 56).dtype == torch.uint8


def one_video_reference(pictures, flip, modality, segments, length):
    """Model input of one video the plain way: float, flip if asked, normalise."""
    pictures = pictures.float()
    return to_model_input(hflip(pictures, modality) if flip else pictures, modality, segments, length)


@pytest.mark.parametrize("modality, channels, length", [("rgb", 3, 1), ("flow", 2, 3), ("rgbdiff", 3, 2)])
def test_batch_flip_and_normalise_gives_each_videos_own_tensors(modality, channels, length):
    span = length + 1 if modality == "rgbdiff" else length
    pictures = torch.randint(0, 256, (4, 2 * span, channels, 8, 8), dtype=torch.uint8)
    flips = torch.tensor([True, False, False, True])
    batch = flip_and_normalise(pictures, flips, modality, segments=2, length=length)
    assert batch.dtype == torch.float32
    for index in range(4):
        expected = one_video_reference(pictures[index], bool(flips[index]), modality, 2, length)
        assert torch.equal(batch[index], expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("modality, channels, length", [("rgb", 3, 1), ("flow", 2, 3)])
def test_batch_transforms_on_the_gpu_give_the_cpu_tensors(modality, channels, length):
    pictures = torch.randint(0, 256, (4, 2 * length, channels, 40, 50), dtype=torch.uint8)
    flips = torch.tensor([True, False, False, True])
    on_cpu = flip_and_normalise(pictures[..., :32, :32], flips, modality, 2, length)
    on_gpu = flip_and_normalise(pictures[..., :32, :32].cuda(), flips.cuda(), modality, 2, length)
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-6)
    views_cpu = video_views(pictures, modality, 2, length, 32, 10)
    views_gpu = video_views(pictures.cuda(), modality, 2, length, 32, 10)
    assert torch.allclose(views_gpu.cpu(), views_cpu, atol=1e-6)


def test_views_of_a_batch_of_videos_of_mixed_sizes_are_each_videos_own_views():
    wide = torch.randint(0, 256, (3, 3, 40, 56), dtype=torch.uint8)
    tall = torch.randint(0, 256, (3, 3, 48, 40), dtype=torch.uint8)
    views = video_views([wide, tall], "rgb", segments=3, length=1, size=32, crops=10)
    assert views.shape == (2, 10, 3, 3, 32, 32)
    for index, video in enumerate((wide, tall)):
        for view, (top, left, flip) in enumerate(view_boxes(*video.shape[-2:], 32, 10)):
            cut = video[..., top:top + 32, left:left + 32]
            assert torch.equal(views[index, view], one_video_reference(cut, flip, "rgb", 3, 1))


def test_worker_crop_stays_uint8_within_one_grey_level_of_a_float_resize():
    stack = torch.randint(0, 256, (4, 2, 60, 80), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(3)
    pictures, flip = train_crop(stack, "flow", 32, generator)
    assert pictures.dtype == torch.uint8 and pictures.shape == (4, 2, 32, 32) and isinstance(flip, bool)
    box = multiscale_crop_box(60, 80, 32, scales_for("flow"), torch.Generator().manual_seed(3))
    assert (pictures.float() - crop_resize(stack.float(), box, 32)).abs().max() <= 1.0
