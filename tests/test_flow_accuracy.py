"""Both TV-L1 backends against Middlebury ground truth, and the torch backend against OpenCV on real frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow.driver import flow_video
from tsnpipe.stages.flow.opencv_tvl1 import create_tvl1, opencv_flow
from tsnpipe.stages.flow.groundtruth import endpoint_error, read_flo
from tsnpipe.stages.flow.torch_tvl1 import tvl1_flow

MIDDLEBURY = Path(__file__).resolve().parent / "data" / "middlebury"
CLIP = Path(__file__).resolve().parents[1] / "pipeline/samples/videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"


def middlebury_pair(name: str):
    first = cv2.imread(str(MIDDLEBURY / name / "frame10.png"), cv2.IMREAD_GRAYSCALE)
    second = cv2.imread(str(MIDDLEBURY / name / "frame11.png"), cv2.IMREAD_GRAYSCALE)
    return first, second, read_flo(MIDDLEBURY / name / "flow10.flo")


@pytest.fixture(scope="module")
def opencv_epe() -> dict[str, float]:
    tvl1 = create_tvl1(FlowParams())
    errors = {}
    for name in ("RubberWhale", "Grove2"):
        first, second, truth = middlebury_pair(name)
        errors[name] = endpoint_error(opencv_flow(tvl1, first, second), truth)
    return errors


@pytest.mark.parametrize("name", ["RubberWhale", "Grove2"])
def test_opencv_backend_reaches_published_tvl1_accuracy(opencv_epe, name):
    assert opencv_epe[name] < 0.2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["RubberWhale", "Grove2"])
def test_torch_backend_matches_opencv_on_middlebury(opencv_epe, name):
    first, second, truth = middlebury_pair(name)
    as_batch = lambda image: torch.from_numpy(image)[None, None].float()  # noqa: E731
    with torch.inference_mode():
        flow = tvl1_flow(as_batch(first), as_batch(second), FlowParams(backend="torch"))
    epe = endpoint_error(flow[0].permute(1, 2, 0).numpy(), truth)
    assert abs(epe - opencv_epe[name]) <= 0.01, f"torch EPE {epe:.3f} px, OpenCV {opencv_epe[name]:.3f} px"


def test_torch_flow_images_match_opencv_on_a_real_clip(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    capture = cv2.VideoCapture(str(CLIP))
    for k in range(4):
        ok, frame = capture.read()
        assert ok
        for _ in range(2):  # every third source frame: 25 fps read at about 10 fps
            capture.read()
        cv2.imwrite(str(frames / f"img_{k + 1:05d}.jpg"), cv2.resize(frame, (160, 120), interpolation=cv2.INTER_AREA))
    for backend in ("opencv", "torch"):
        assert flow_video(frames, tmp_path / backend, FlowParams(backend=backend), device="cpu")["pairs"] == 3
    for name in sorted(p.name for p in (tmp_path / "opencv").iterdir()):
        reference = cv2.imread(str(tmp_path / "opencv" / name), cv2.IMREAD_GRAYSCALE).astype(int)
        ours = cv2.imread(str(tmp_path / "torch" / name), cv2.IMREAD_GRAYSCALE).astype(int)
        within_one = np.mean(np.abs(reference - ours) <= 1)
        assert within_one >= 0.99, f"{name}: only {within_one:.1%} of pixels within one grey level of OpenCV"
        assert reference.std() > 0.5, f"{name}: the clip shows no motion, the comparison would prove nothing"


def test_torch_building_blocks_match_opencv():
    """The median filter equals cv::medianBlur; the bicubic warp agrees with cv::remap INTER_CUBIC."""
    from tsnpipe.stages.flow.torch_tvl1 import median_filter, median_unfolded, pixel_grid, warp_bicubic

    image = cv2.imread(str(MIDDLEBURY / "RubberWhale" / "frame10.png"), cv2.IMREAD_GRAYSCALE)[:96, :128]
    image = image.astype(np.float32)
    flows = torch.from_numpy(np.stack((image, image[::-1].copy())))[None]
    for median in (median_filter, median_unfolded):  # the CPU's and the GPU's
        ours = median(flows, 5)[0].numpy()
        assert np.array_equal(ours[0], cv2.medianBlur(image, 5))
        assert np.array_equal(ours[1], cv2.medianBlur(image[::-1].copy(), 5))

    rng = np.random.default_rng(0)
    flow = rng.uniform(-3, 3, size=(2, 96, 128)).astype(np.float32)
    ys, xs = np.mgrid[0:96, 0:128].astype(np.float32)
    reference = cv2.remap(image, xs + flow[0], ys + flow[1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
    warped = warp_bicubic(torch.from_numpy(image)[None, None], torch.from_numpy(flow)[None], pixel_grid(96, 128, "cpu"))
    # Both round positions to 1/32 px and read zeros outside: the same grey levels up to float rounding,
    # borders included (unrounded positions differ by up to 3.5 grey levels).
    assert np.abs(warped[0, 0].numpy() - reference).max() < 0.01


def test_torch_pyramid_levels_equal_opencv_resize_by_scale_step():
    """cv::resize with fx = fy = 0.8 samples at (x + 0.5) / 0.8 - 0.5, not at the rounded sizes' ratio."""
    from tsnpipe.stages.flow.torch_tvl1 import image_pyramid, pyramid_sizes

    image = cv2.imread(str(MIDDLEBURY / "Grove2" / "frame10.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    sizes = pyramid_sizes(*image.shape, nscales=5, scale_step=0.8)
    levels = image_pyramid(torch.from_numpy(image)[None, None], sizes, 0.8)
    reference = image
    for level in levels[1:]:
        reference = cv2.resize(reference, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
        assert level.shape[-2:] == reference.shape
        assert np.abs(level[0, 0].numpy() - reference).max() < 1e-3  # F.interpolate's mapping: up to 40 levels off


@pytest.mark.parametrize("name", ["RubberWhale", "Grove2"])
@pytest.mark.parametrize("settings", [dict(warps=1, inner_iterations=10, outer_iterations=1),
                                      dict(warps=2, inner_iterations=10, outer_iterations=2, epsilon=0.05)],
                         ids=["coarse-to-fine", "stopping-rule"])
def test_torch_flow_follows_opencv_step_for_step(name, settings):
    """On a small real pair, with few iterations (before float rounding grows through the median filter),
    the torch flow is OpenCV's to a few thousandths of a pixel, borders and coarse levels included; with a
    large epsilon the warps stop at OpenCV's iteration."""
    first, second, _ = middlebury_pair(name)
    first, second = (cv2.resize(image, (146, 97), interpolation=cv2.INTER_AREA) for image in (first, second))
    params = FlowParams(backend="torch", **settings)
    reference = opencv_flow(create_tvl1(params), first, second)
    as_batch = lambda image: torch.from_numpy(image)[None, None].float()  # noqa: E731
    with torch.inference_mode():
        flow = tvl1_flow(as_batch(first), as_batch(second), params)[0].permute(1, 2, 0).numpy()
    distance = np.linalg.norm(flow - reference, axis=-1)
    assert np.abs(reference).mean() > 0.1, "no motion: the comparison would prove nothing"
    border = np.concatenate([distance[:2].ravel(), distance[-2:].ravel(), distance[:, :2].ravel(),
                             distance[:, -2:].ravel()])
    assert distance.mean() < 0.005, f"mean {distance.mean():.4f} px from OpenCV's flow"
    assert border.mean() < 0.01, f"mean {border.mean():.4f} px from OpenCV's flow on the two-pixel border"
